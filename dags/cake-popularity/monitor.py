"""monitor: drift of a fresh batch of survey answers against the training data.

Per feature: the population stability index (PSI, over the training data's deciles, or over
categories) and the two-sample Kolmogorov–Smirnov statistic for numbers. metrics.json holds
them all plus `max_psi` and `drifted_features`. Above `--threshold` the stage warns; with
`--fail-on-drift true` it fails, which is how a retraining alarm would be wired.

    python3 monitor.py --rows 1000 --seed 8 --shift 0.0 --threshold 0.2 --fail-on-drift false
"""

import argparse

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

import survey
from io_paths import flag, input_file, write_json, write_metrics

EPS = 1e-4


def psi(expected, actual):
    expected = np.clip(expected, EPS, None)
    actual = np.clip(actual, EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_psi(reference, current, bins=10):
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    return psi(ref, cur)


def categorical_psi(reference, current, categories):
    ref = reference.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    cur = current.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    return psi(ref, cur)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--fail-on-drift", type=flag, default=False)
    args = parser.parse_args()

    reference = pd.read_csv(input_file("features", "train.csv"))
    fresh = survey.generate(args.rows, args.seed, shift=args.shift)
    print(f"fresh batch: {len(fresh)} rows (seed {args.seed}, shift {args.shift}) against "
          f"{len(reference)} training rows")
    metrics, report = {}, []
    for col in survey.NUMERIC:
        value = numeric_psi(reference[col].to_numpy(), fresh[col].to_numpy())
        ks = ks_2samp(reference[col], fresh[col]).statistic
        metrics[f"psi_{col}"], metrics[f"ks_{col}"] = value, float(ks)
        report.append((col, value, float(ks)))
    for col, categories in survey.CATEGORICAL.items():
        value = categorical_psi(reference[col], fresh[col], categories)
        metrics[f"psi_{col}"] = value
        report.append((col, value, None))

    drifted = [col for col, value, _ in report if value > args.threshold]
    print(f"{'feature':<16} {'psi':>8} {'ks':>8}")
    for col, value, ks in report:
        mark = "  DRIFT" if value > args.threshold else ""
        ks_text = f"{ks:8.3f}" if ks is not None else f"{'-':>8}"
        print(f"{col:<16} {value:8.3f} {ks_text}{mark}")
    metrics["max_psi"] = max(value for _, value, _ in report)
    metrics["drifted_features"] = len(drifted)
    write_json("drift.json", {"threshold": args.threshold, "drifted": drifted,
                              "features": {c: {"psi": p, "ks": k} for c, p, k in report}})
    write_metrics(metrics)
    if drifted:
        message = (f"drift above PSI {args.threshold} in {', '.join(drifted)}: the model was "
                   f"trained on a different population; retrain on fresh data")
        if args.fail_on_drift:
            print(f"error: {message}")
            raise SystemExit(1)
        print(f"warning: {message}")
    else:
        print(f"no drift: every feature's PSI is at most {args.threshold}")


if __name__ == "__main__":
    main()
