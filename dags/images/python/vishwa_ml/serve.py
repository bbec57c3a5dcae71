"""The prediction server a model image runs (python's http.server); see vishwa_ml.package.

    GET  /health    {"status": "ok", "model": ..., "version": ...}
    GET  /          the model card (markdown)
    POST /predict   {"instances": [{field: value, ...}, ...]}  (or one object)
                    → {"predictions": [{"label": 0|1, "probability": p, "model": key}], ...}

Models are pickled dicts from the train (or select) stage: `models` maps a key to a fitted
estimator taking raw fields; `key_field` (if any) names the request field choosing the model,
`default` the key used when it is absent. The model image runs
`python3 -m vishwa_ml.serve --dir /model`; `python3 -m vishwa_ml.serve --check` is its
HEALTHCHECK.
"""

import argparse
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
MAX_INSTANCES = 1000


class Model:
    def __init__(self, directory):
        import pickle

        with open(os.path.join(directory, "model.pkl"), "rb") as f:
            self.bundle = pickle.load(f)
        with open(os.path.join(directory, "metadata.json")) as f:
            self.metadata = json.load(f)
        with open(os.path.join(directory, "model_card.md")) as f:
            self.card = f.read()
        # Import pandas now rather than on the first request: the server only listens (and
        # the healthcheck only passes) once a prediction is quick.
        import pandas  # noqa: F401

    def predict(self, instances):
        import pandas as pd

        bundle = self.bundle
        features, key_field = bundle["features"], bundle.get("key_field")
        results = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise ValueError(f"instance {i} is not an object")
            key = instance.get(key_field, bundle["default"]) if key_field else bundle["default"]
            if key not in bundle["models"]:
                raise ValueError(f"instance {i}: unknown {key_field} '{key}'; known: "
                                 f"{sorted(bundle['models'])}")
            missing = [f for f in features if f not in instance]
            if missing:
                raise ValueError(f"instance {i} lacks {missing}; every instance needs {features}")
            row = pd.DataFrame([{f: instance[f] for f in features}], columns=features)
            probability = float(bundle["models"][key].predict_proba(row)[0, 1])
            results.append({"label": int(probability >= 0.5), "probability": round(probability, 6),
                            "model": key})
        return results


class Handler(BaseHTTPRequestHandler):
    model = None

    def log_message(self, fmt, *args):
        if "/health" not in self.path:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        meta = self.model.metadata
        if self.path == "/health":
            self.reply(200, {"status": "ok", "model": meta["name"], "version": meta["version"]})
        elif self.path in ("/", "/card"):
            self.reply(200, self.model.card, "text/markdown; charset=utf-8")
        else:
            self.reply(404, {"error": f"no {self.path}; try GET /health, GET / or POST /predict"})

    def do_POST(self):
        if self.path != "/predict":
            self.reply(404, {"error": f"no {self.path}; predictions are POST /predict"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length <= 0 or length > MAX_BODY:
                raise ValueError(f"send a JSON body of 1 byte to {MAX_BODY} bytes")
            body = json.loads(self.rfile.read(length))
            instances = body.get("instances", [body]) if isinstance(body, dict) else body
            if not isinstance(instances, list) or not 0 < len(instances) <= MAX_INSTANCES:
                raise ValueError(f"'instances' must be a list of 1 to {MAX_INSTANCES} objects")
            predictions = self.model.predict(instances)
        except (ValueError, TypeError) as e:
            self.reply(400, {"error": str(e), "features": self.model.bundle["features"]})
            return
        meta = self.model.metadata
        self.reply(200, {"predictions": predictions, "model": meta["name"],
                         "version": meta["version"]})


def main():
    parser = argparse.ArgumentParser(description="serve a packaged model over HTTP",
                                     prog="python3 -m vishwa_ml.serve")
    parser.add_argument("--dir", default="/model",
                        help="the folder holding model.pkl, metadata.json and model_card.md")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--check", action="store_true", help="exit 0 if the server answers")
    args = parser.parse_args()
    if args.check:
        with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=2) as r:
            sys.exit(0 if r.status == 200 else 1)
    Handler.model = Model(args.dir)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    meta = Handler.model.metadata
    print(f"serving {meta['name']} {meta['version']} on port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
