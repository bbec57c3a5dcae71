"""monitor: drift of a fresh batch of survey answers against the training data.

Per feature: PSI and (for numbers) the Kolmogorov–Smirnov statistic (vishwa_ml.driftstats).
metrics.json holds them all plus `max_psi` and `drifted_features`. Above `--threshold` the
stage warns; with `--fail-on-drift true` it fails, which is how a retraining alarm is wired.

    python3 monitor.py --rows 1000 --seed 8 --shift 0.0 --threshold 0.2 --fail-on-drift false
"""

import argparse

import pandas as pd

from vishwa_ml import driftstats
from vishwa_ml.io_paths import input_file

import survey


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    driftstats.add_arguments(parser)
    args = parser.parse_args()
    if args.rows < 10:
        parser.error(f"--rows must be at least 10, got {args.rows}")

    reference = pd.read_csv(input_file("features", "train.csv"))
    fresh = survey.generate(args.rows, args.seed, shift=args.shift)
    print(f"fresh batch: {len(fresh)} rows (seed {args.seed}, shift {args.shift}) against "
          f"{len(reference)} training rows")
    driftstats.judge(reference, fresh, survey.NUMERIC, survey.CATEGORICAL, args,
                     "the model was trained on a different population; retrain on fresh data")


if __name__ == "__main__":
    main()
