"""features: the validated survey → a stratified train/test split and the feature spec.

Encoding (scaling, one-hot flavours) lives inside the model's own pipeline, so the deployed
server applies exactly what training applied; this stage picks the features, adds the derived
ones and splits the rows.
"""

import argparse

import pandas as pd
from sklearn.model_selection import train_test_split

from vishwa_ml.io_paths import input_file, output_file, write_json, write_metrics

import survey


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    if not 0.05 <= args.test_fraction <= 0.5:
        parser.error(f"--test-fraction must be within [0.05, 0.5], got {args.test_fraction}")

    input_file("validate", "report.json")  # only validated data goes on
    df = pd.read_csv(input_file("collect", "survey.csv"))
    data = df[survey.FEATURES + [survey.TARGET]]
    train, test = train_test_split(
        data, test_size=args.test_fraction, random_state=args.seed, stratify=data[survey.TARGET]
    )
    train.to_csv(output_file("train.csv"), index=False)
    test.to_csv(output_file("test.csv"), index=False)
    write_json("feature_spec.json", {
        "numeric": list(survey.NUMERIC),
        "categorical": {k: v for k, v in survey.CATEGORICAL.items()},
        "target": survey.TARGET,
    })
    print(f"features: {len(survey.FEATURES)} ({', '.join(survey.FEATURES)})")
    print(f"split: {len(train)} train rows, {len(test)} test rows (seed {args.seed})")
    write_metrics({"train_rows": len(train), "test_rows": len(test),
                   "positive_rate": float(data[survey.TARGET].mean())})


if __name__ == "__main__":
    main()
