"""Where a stage finds its inputs and writes its outputs (Vishwa's container contract).

Inputs: /vishwa/in/<stage>/<file>, the declared outputs of the stages this one needs.
Outputs: /vishwa/out/<file>; metrics.json there is recorded as the stage's metrics.
VISHWA_IN_DIR and VISHWA_OUT_DIR override both, to run a script by hand outside Vishwa.
"""

import json
import os
import sys
from pathlib import Path

IN = Path(os.environ.get("VISHWA_IN_DIR", "/vishwa/in"))
OUT = Path(os.environ.get("VISHWA_OUT_DIR", "/vishwa/out"))


def input_file(stage, name):
    path = IN / stage / name
    if not path.is_file():
        fail(f"input {path} is missing: does this stage list `{stage}` in `needs:` and does "
             f"`{stage}` declare `{name}` in `outputs:`?")
    return path


def output_file(name):
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT / name


def write_json(name, value):
    with open(output_file(name), "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def write_metrics(metrics):
    """metrics.json: a flat object of numbers, as Vishwa records it."""
    clean = {k: (float(v) if not isinstance(v, (int, float)) else v) for k, v in metrics.items()}
    write_json("metrics.json", clean)
    for key, value in sorted(clean.items()):
        print(f"metric {key} = {value:.4g}" if isinstance(value, float) else f"metric {key} = {value}")


def flag(text):
    """An argparse type for `true`/`false` (how Vishwa renders boolean params)."""
    import argparse

    value = text.strip().lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return value == "true"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
