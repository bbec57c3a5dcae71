"""package: a Docker image holding the model and a model card, served by vishwa_ml.serve.

Talks to the Docker Engine API over the mounted socket (no docker CLI): POST /build with a
tar context whose Dockerfile starts FROM the pipelines' own python-ml image (which holds this
package, the prediction server with it). Tags the image `vishwa-examples/<name>-model:<run
id>`; writes image.json (for deploy) and model_card.md.

    python3 -m vishwa_ml.package --name cake-popularity --model train/model.pkl
        --metrics evaluate/metrics.json --example '{"age": 19, ...}'
"""

import argparse
import datetime
import json
import os
import re
import time

from vishwa_ml.dockerapi import Docker, DockerError, tar_context
from vishwa_ml.io_paths import IN, fail, output_file, write_json, write_metrics

BASE_IMAGE = "vishwa-examples/python-ml:1"

# As few steps as possible: the classic builder commits a layer per instruction, which costs
# seconds each on a busy host. The port and the healthcheck are set by vishwa_ml.deploy.
DOCKERFILE = f"""FROM {BASE_IMAGE}
COPY model.pkl metadata.json model_card.md /model/
CMD ["python3", "-m", "vishwa_ml.serve", "--dir", "/model", "--port", "8080"]
"""


def version_tag():
    """The run id as a Docker tag ([a-z0-9_.-], at most 128), or a timestamp outside Vishwa."""
    run = os.environ.get("VISHWA_RUN_ID") or time.strftime("manual-%Y%m%d%H%M%S")
    return re.sub(r"[^a-z0-9_.-]", "-", run.lower())[:128]


def model_card(meta, metrics, example):
    lines = [
        f"# Model card: {meta['name']} {meta['version']}",
        "",
        f"- task: {meta['task']}",
        f"- built: {meta['built']} by Vishwa run `{meta['run']}` (DAG `{meta['dag']}`)",
        f"- library: {meta['library']}",
        f"- trained on: {meta['trained_rows']} rows of synthetic data",
        f"- features: {', '.join(meta['features'])}",
    ]
    if meta.get("key_field"):
        lines.append(f"- one model per `{meta['key_field']}`: {', '.join(meta['models'])}"
                     f" (default `{meta['default']}`)")
    lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
    lines += [
        "", "## Use", "",
        "POST /predict with `{\"instances\": [...]}`; each instance carries every feature:",
        "", "```json", json.dumps({"instances": [example]}), "```", "",
        "## Limits", "",
        "Trained on synthetic data made by this pipeline; it shows the MLOps lifecycle, not a",
        "real population. Watch the monitor stage's drift metrics before trusting it on new data.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(prog="python3 -m vishwa_ml.package",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="model name, e.g. cake-popularity")
    parser.add_argument("--model", required=True, help="model.pkl under /vishwa/in")
    parser.add_argument("--metrics", required=True, help="metrics.json under /vishwa/in")
    parser.add_argument("--example", required=True, help="an example instance, as JSON")
    args = parser.parse_args()

    import pickle

    model_path, metrics_path = IN / args.model, IN / args.metrics
    for path in (model_path, metrics_path):
        if not path.is_file():
            fail(f"input {path} is missing: check this stage's `needs:`")
    model_bytes = model_path.read_bytes()
    bundle = pickle.loads(model_bytes)
    metrics = json.loads(metrics_path.read_text())
    version = version_tag()
    meta = {
        "name": args.name,
        "version": version,
        "task": bundle["task"],
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": os.environ.get("VISHWA_RUN_ID", "(outside Vishwa)"),
        "dag": os.environ.get("VISHWA_DAG", args.name),
        "library": bundle["library"],
        "trained_rows": bundle["trained_rows"],
        "features": bundle["features"],
        "key_field": bundle.get("key_field"),
        "models": sorted(bundle["models"]),
        "default": bundle["default"],
        "metrics": metrics,
    }
    card = model_card(meta, metrics, json.loads(args.example))
    image = f"vishwa-examples/{args.name}-model:{version}"

    docker = Docker()
    started = time.monotonic()
    context = tar_context({
        "Dockerfile": DOCKERFILE.encode(),
        "model.pkl": model_bytes,
        "metadata.json": json.dumps(meta, indent=2).encode(),
        "model_card.md": card.encode(),
    })
    print(f"building {image} from {BASE_IMAGE} ({len(context)} byte context)")
    try:
        image_id = docker.build(context, image, labels={
            "vishwa.example-model": args.name,
            "vishwa.example-run": meta["run"],
        })
    except DockerError as e:
        fail(f"{e}\n(is {BASE_IMAGE} built? run dags/images/build-python-ml.sh)")
    seconds = time.monotonic() - started
    print(f"built {image} ({image_id[:19]}) in {seconds:.1f}s")
    output_file("model_card.md").write_text(card)
    write_json("image.json", {"image": image, "image_id": image_id, "name": args.name,
                              "version": version})
    print(card)
    write_metrics({"build_seconds": seconds, "context_bytes": len(context)})


if __name__ == "__main__":
    main()
