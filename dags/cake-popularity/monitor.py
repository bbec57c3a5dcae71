"""monitor: drift of a fresh batch of survey answers against the training data.

Per feature: PSI and (for numbers) the Kolmogorov–Smirnov statistic (driftstats.py).
metrics.json holds them all plus `max_psi` and `drifted_features`. Above `--threshold` the
stage warns; with `--fail-on-drift true` it fails, which is how a retraining alarm is wired.

    python3 monitor.py --rows 1000 --seed 8 --shift 0.0 --threshold 0.2 --fail-on-drift false
"""

import argparse

import pandas as pd

import survey
from driftstats import drift_report, print_report
from io_paths import flag, input_file, write_json, write_metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--fail-on-drift", type=flag, default=False)
    args = parser.parse_args()
    if args.rows < 10:
        parser.error(f"--rows must be at least 10, got {args.rows}")

    reference = pd.read_csv(input_file("features", "train.csv"))
    fresh = survey.generate(args.rows, args.seed, shift=args.shift)
    print(f"fresh batch: {len(fresh)} rows (seed {args.seed}, shift {args.shift}) against "
          f"{len(reference)} training rows")
    rows, metrics, drifted = drift_report(reference, fresh, survey.NUMERIC,
                                          survey.CATEGORICAL, args.threshold)
    print_report(rows, args.threshold)
    write_json("drift.json", {"threshold": args.threshold, "drifted": drifted,
                              "features": {c: {"psi": p, "ks": k} for c, p, k in rows}})
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
