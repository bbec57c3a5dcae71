"""evaluate: the trained model on the held-out test.csv → metrics.json (accuracy, f1, ...).

The gate after this stage reads `stages.evaluate.metrics.accuracy`.
"""

import pickle

import pandas as pd
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score,
                             recall_score, roc_auc_score)

from vishwa_ml.io_paths import input_file, write_json, write_metrics


def main():
    with open(input_file("train", "model.pkl"), "rb") as f:
        bundle = pickle.load(f)
    test = pd.read_csv(input_file("features", "test.csv"))
    model = bundle["models"][bundle["default"]]
    x, y = test[bundle["features"]], test[bundle["target"]]
    predicted = model.predict(x)
    probability = model.predict_proba(x)[:, 1]
    matrix = confusion_matrix(y, predicted, labels=[0, 1]).tolist()
    print(f"evaluated on {len(test)} held-out rows")
    print(f"confusion matrix (rows: actual 0/1, columns: predicted 0/1): {matrix}")
    write_json("evaluation.json", {"test_rows": len(test), "confusion_matrix": matrix})
    write_metrics({
        "accuracy": accuracy_score(y, predicted),
        "f1": f1_score(y, predicted),
        "precision": precision_score(y, predicted, zero_division=0),
        "recall": recall_score(y, predicted),
        "roc_auc": roc_auc_score(y, probability),
        "test_rows": len(test),
    })


if __name__ == "__main__":
    main()
