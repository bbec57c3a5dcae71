"""gate: promotes the model only when it is good enough.

Vishwa runs this stage only when its `when:` holds (evaluate's accuracy ≥ min_accuracy);
otherwise it is skipped and so are package, deploy and what follows. The script checks the
same rule again, so an engine that ignored `when:` would still stop a weak model here.

    python3 -m vishwa_ml.gate --stage evaluate --metric accuracy --min 0.75
"""

import argparse
import json

from vishwa_ml.io_paths import fail, input_file


def main():
    parser = argparse.ArgumentParser(prog="python3 -m vishwa_ml.gate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--min", type=float, required=True)
    args = parser.parse_args()

    metrics = json.loads(input_file(args.stage, "metrics.json").read_text())
    if args.metric not in metrics:
        fail(f"{args.stage}'s metrics.json has no '{args.metric}' (it has {sorted(metrics)})")
    value = metrics[args.metric]
    if value < args.min:
        fail(f"{args.stage} {args.metric} {value:.4f} is below {args.min}: not promoting")
    print(f"gate passed: {args.stage} {args.metric} {value:.4f} >= {args.min}; promoting the model")


if __name__ == "__main__":
    main()
