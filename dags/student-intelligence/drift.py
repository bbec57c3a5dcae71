"""drift: a fresh cohort of enrollments against the training set (PSI, KS per feature).

    python3 drift.py --students 800 --seed 12 --shift 0.0 --threshold 0.2 --fail-on-drift false

Warns above the threshold; with --fail-on-drift true it fails, the signal to retrain.
"""

import argparse

import pandas as pd

import cohort
from driftstats import drift_report, print_report
from io_paths import flag, input_file, write_json, write_metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--fail-on-drift", type=flag, default=False)
    args = parser.parse_args()
    if args.students < 10:
        parser.error(f"--students must be at least 10, got {args.students}")

    reference = pd.read_csv(input_file("features", "training.csv"))
    students, _, enrollments = cohort.generate(args.students, args.seed,
                                               courses=sorted(reference["course"].unique()),
                                               shift=args.shift)
    fresh = cohort.join(students, enrollments)
    print(f"fresh cohort: {len(fresh)} enrollments (seed {args.seed}, shift {args.shift}) "
          f"against {len(reference)} training rows")
    rows, metrics, drifted = drift_report(
        reference, fresh, cohort.FEATURES,
        {"course": sorted(reference["course"].unique())}, args.threshold)
    print_report(rows, args.threshold)
    write_json("drift.json", {"threshold": args.threshold, "drifted": drifted,
                              "features": {c: {"psi": p, "ks": k} for c, p, k in rows}})
    write_metrics(metrics)
    if drifted:
        message = (f"drift above PSI {args.threshold} in {', '.join(drifted)}: retrain on the "
                   f"new cohort")
        if args.fail_on_drift:
            print(f"error: {message}")
            raise SystemExit(1)
        print(f"warning: {message}")
    else:
        print(f"no drift: every feature's PSI is at most {args.threshold}")


if __name__ == "__main__":
    main()
