"""train: an XGBoost classifier for one course (a `for_each` instance: train[<course>]).

    python3 train.py --course maths --seed 11

Holds out a stratified quarter of the course's rows; writes model.pkl (the fitted
XGBClassifier) and metrics.json (accuracy, f1, roc_auc, rows).
"""

import argparse
import json
import pickle

import pandas as pd
import xgboost
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from xgboost import XGBClassifier

from vishwa_ml.io_paths import fail, input_file, output_file, write_metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--trees", type=int, default=120)
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()

    spec = json.loads(input_file("features", "feature_spec.json").read_text())
    data = pd.read_csv(input_file("features", "training.csv"))
    rows = data[data["course"] == args.course]
    known = sorted(data["course"].unique())
    if rows.empty:
        fail(f"no rows for course '{args.course}'; the training set has {known}")
    if rows[spec["target"]].nunique() < 2 or len(rows) < 40:
        fail(f"course '{args.course}' has {len(rows)} rows, too few (or one class) to train on")
    x, y = rows[spec["features"]], rows[spec["target"]]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=args.seed, stratify=y)
    model = XGBClassifier(n_estimators=args.trees, max_depth=args.depth, learning_rate=0.1,
                          subsample=0.9, n_jobs=1, random_state=args.seed,
                          eval_metric="logloss")
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    probability = model.predict_proba(x_test)[:, 1]
    with open(output_file("model.pkl"), "wb") as f:
        pickle.dump({"course": args.course, "model": model, "features": spec["features"],
                     "trained_rows": len(x_train),
                     "library": f"xgboost {xgboost.__version__}"}, f)
    print(f"{args.course}: XGBoost ({args.trees} trees, depth {args.depth}) on "
          f"{len(x_train)} rows, tested on {len(x_test)}")
    write_metrics({"accuracy": accuracy_score(y_test, predicted),
                   "f1": f1_score(y_test, predicted),
                   "roc_auc": roc_auc_score(y_test, probability),
                   "rows": len(rows)})


if __name__ == "__main__":
    main()
