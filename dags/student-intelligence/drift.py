"""drift: a fresh cohort of enrollments against the training set (PSI, KS per feature).

    python3 drift.py --students 800 --seed 12 --shift 0.0 --threshold 0.2 --fail-on-drift false

Warns above the threshold; with --fail-on-drift true it fails, the signal to retrain.
"""

import argparse

import pandas as pd

from vishwa_ml import driftstats
from vishwa_ml.io_paths import input_file

import cohort


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, required=True)
    driftstats.add_arguments(parser)
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
    driftstats.judge(reference, fresh, cohort.FEATURES,
                     {"course": sorted(reference["course"].unique())}, args,
                     "retrain on the new cohort")


if __name__ == "__main__":
    main()
