"""version: the data version of this run's training set, its sha256.

Recorded as an artifact (data_version.json, with the full digest) and as metrics: Vishwa's
metrics are numbers, so `data_version` is the digest's first 12 hex digits as an integer
(exact in a double) — equal across runs exactly when the training data is.
"""

import hashlib

import pandas as pd

from vishwa_ml.io_paths import input_file, write_json, write_metrics


def main():
    path = input_file("features", "training.csv")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    frame = pd.read_csv(path)
    write_json("data_version.json", {"sha256": digest, "rows": len(frame),
                                     "columns": list(frame.columns),
                                     "courses": sorted(frame["course"].unique().tolist())})
    print(f"training data version sha256:{digest} ({len(frame)} rows)")
    write_metrics({"data_version": int(digest[:12], 16), "rows": len(frame)})


if __name__ == "__main__":
    main()
