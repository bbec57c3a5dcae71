"""Drift statistics between a reference sample (the training data) and a fresh one.

PSI (population stability index) over the reference's deciles for numbers, over the known
categories for labels; the two-sample Kolmogorov–Smirnov statistic for numbers. Common rules
of thumb: PSI below 0.1 is stable, 0.1–0.25 a moderate shift, above 0.25 a large one.
"""

import numpy as np
from scipy.stats import ks_2samp

from vishwa_ml.io_paths import flag, write_json, write_metrics

EPS = 1e-4


def psi(expected, actual):
    """PSI between two distributions over the same bins (fractions summing to 1)."""
    expected = np.clip(np.asarray(expected, dtype=float), EPS, None)
    actual = np.clip(np.asarray(actual, dtype=float), EPS, None)
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


def ks(reference, current):
    return float(ks_2samp(reference, current).statistic)


def drift_report(reference, current, numeric, categorical, threshold):
    """Per-feature PSI (and KS for numbers), the metrics to record and the drifted names.

    `categorical` maps a column to its categories."""
    rows, metrics = [], {}
    for col in numeric:
        value, stat = numeric_psi(reference[col].to_numpy(), current[col].to_numpy()), \
            ks(reference[col], current[col])
        metrics[f"psi_{col}"], metrics[f"ks_{col}"] = value, stat
        rows.append((col, value, stat))
    for col, categories in categorical.items():
        value = categorical_psi(reference[col], current[col], categories)
        metrics[f"psi_{col}"] = value
        rows.append((col, value, None))
    drifted = [col for col, value, _ in rows if value > threshold]
    metrics["max_psi"] = max(value for _, value, _ in rows)
    metrics["drifted_features"] = len(drifted)
    return rows, metrics, drifted


def add_arguments(parser):
    """The options every drift stage takes besides its batch size."""
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--fail-on-drift", type=flag, default=False)


def judge(reference, current, numeric, categorical, args, advice):
    """The drift stage's verdict on `current` against `reference`.

    Prints the per-feature table, writes drift.json and the metrics, then says there is no
    drift, warns, or (with --fail-on-drift true) exits 1; `advice` ends the message."""
    rows, metrics, drifted = drift_report(reference, current, numeric, categorical,
                                          args.threshold)
    print_report(rows, args.threshold)
    write_json("drift.json", {"threshold": args.threshold, "drifted": drifted,
                              "features": {c: {"psi": p, "ks": k} for c, p, k in rows}})
    write_metrics(metrics)
    if not drifted:
        print(f"no drift: every feature's PSI is at most {args.threshold}")
        return
    message = f"drift above PSI {args.threshold} in {', '.join(drifted)}: {advice}"
    if args.fail_on_drift:
        print(f"error: {message}")
        raise SystemExit(1)
    print(f"warning: {message}")


def print_report(rows, threshold):
    print(f"{'feature':<18} {'psi':>8} {'ks':>8}")
    for col, value, stat in rows:
        mark = "  DRIFT" if value > threshold else ""
        stat_text = f"{stat:8.3f}" if stat is not None else f"{'-':>8}"
        print(f"{col:<18} {value:8.3f} {stat_text}{mark}")
