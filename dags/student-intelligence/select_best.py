"""select: compares the per-course models and picks the best.

Reads every fan-out instance's outputs, /vishwa/in/train[<course>]/metrics.json and
model.pkl, prints a leaderboard, and writes models.pkl: every course's model in the form
serve.py loads (the request's `course` picks one; the best model answers when it is absent).
metrics.json: best and worst accuracy and AUC, so the gate can demand that every course's
model is good enough.
"""

import json
import pickle
import re

from vishwa_ml.io_paths import IN, fail, output_file, write_json, write_metrics

INSTANCE = re.compile(r"^train\[(.+)\]$")


def main():
    found = sorted(p for p in IN.iterdir() if INSTANCE.match(p.name)) if IN.is_dir() else []
    if not found:
        fail(f"no train[<course>] inputs under {IN}; this stage must need the fan-out `train`")
    board, models, meta = [], {}, None
    for path in found:
        course = INSTANCE.match(path.name).group(1)
        metrics_path, model_path = path / "metrics.json", path / "model.pkl"
        if not metrics_path.is_file() or not model_path.is_file():
            fail(f"{path} lacks metrics.json or model.pkl")
        metrics = json.loads(metrics_path.read_text())
        with open(model_path, "rb") as f:
            meta = pickle.load(f)
        models[course] = meta["model"]
        board.append({"course": course, **metrics, "trained_rows": meta["trained_rows"]})
    board.sort(key=lambda row: (-row["roc_auc"], row["course"]))
    best = board[0]

    print(f"{'course':<12} {'accuracy':>9} {'f1':>7} {'roc_auc':>8} {'rows':>6}")
    for row in board:
        mark = "  <- best" if row is best else ""
        print(f"{row['course']:<12} {row['accuracy']:9.3f} {row['f1']:7.3f} "
              f"{row['roc_auc']:8.3f} {int(row['rows']):6d}{mark}")
    with open(output_file("models.pkl"), "wb") as f:
        pickle.dump({
            "name": "student-intelligence",
            "task": "will this student pass this course?",
            "features": meta["features"],
            "target": "passed",
            "models": models,
            "default": best["course"],
            "key_field": "course",
            "trained_rows": sum(row["trained_rows"] for row in board),
            "library": meta["library"],
        }, f)
    write_json("leaderboard.json", {"best": best["course"], "courses": board})
    write_metrics({
        "courses": len(board),
        "best_accuracy": best["accuracy"],
        "best_roc_auc": best["roc_auc"],
        "worst_accuracy": min(row["accuracy"] for row in board),
        "worst_roc_auc": min(row["roc_auc"] for row in board),
    })


if __name__ == "__main__":
    main()
