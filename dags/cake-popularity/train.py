"""train: logistic regression (scikit-learn) on train.csv → model.pkl.

The model is a scikit-learn Pipeline (scale numbers, one-hot the flavour, logistic
regression) wrapped in the dict that serve.py loads: it takes raw survey fields.
"""

import argparse
import json
import pickle

import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from vishwa_ml.io_paths import input_file, output_file, write_metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    if args.c <= 0:
        parser.error(f"--c must be positive, got {args.c}")

    spec = json.loads(input_file("features", "feature_spec.json").read_text())
    train = pd.read_csv(input_file("features", "train.csv"))
    numeric, categorical = spec["numeric"], list(spec["categorical"])
    features = numeric + categorical
    pipeline = Pipeline([
        ("encode", ColumnTransformer([
            ("numeric", StandardScaler(), numeric),
            ("categorical", OneHotEncoder(
                categories=[spec["categorical"][c] for c in categorical],
                handle_unknown="ignore"), categorical),
        ])),
        ("model", LogisticRegression(C=args.c, max_iter=1000, random_state=args.seed)),
    ])
    x, y = train[features], train[spec["target"]]
    cv = cross_val_score(pipeline, x, y, cv=5, scoring="accuracy")
    pipeline.fit(x, y)
    with open(output_file("model.pkl"), "wb") as f:
        pickle.dump({
            "name": "cake-popularity",
            "task": "does this student like this cake?",
            "features": features,
            "categories": spec["categorical"],
            "target": spec["target"],
            "models": {"default": pipeline},
            "default": "default",
            "key_field": None,
            "trained_rows": len(train),
            "library": f"scikit-learn {sklearn.__version__}",
        }, f)
    print(f"trained logistic regression (C={args.c}) on {len(train)} rows")
    write_metrics({"train_accuracy": pipeline.score(x, y), "cv_accuracy": cv.mean(),
                   "cv_accuracy_std": cv.std()})


if __name__ == "__main__":
    main()
