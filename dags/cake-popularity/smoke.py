"""smoke: calls the deployed model over HTTP, as a client on its Docker network would.

Vishwa's stages start on Docker's default bridge, so this stage first joins its own container
to the model's network (Docker API: POST /networks/<net>/connect), then calls the model by
container name (falling back to its address on that network when the name does not resolve).
Checks /health reports the version just deployed, that /predict answers for a cake lover and
a cake hater with sensible probabilities, and that a bad request gets a 400.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from vishwa_ml.dockerapi import Docker, DockerError
from vishwa_ml.io_paths import fail, input_file, write_metrics

FAN = {"age": 19, "sweet_tooth": 10, "chocolate_love": 10, "price_inr": 80, "portion_g": 200,
       "flavour": "chocolate"}
HATER = {"age": 30, "sweet_tooth": 1, "chocolate_love": 1, "price_inr": 550, "portion_g": 60,
         "flavour": "lemon"}


def call(url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def reachable_base(deployment, attempts=20):
    for _ in range(attempts):
        for base in (deployment["url"], deployment["ip_url"]):
            try:
                status, _ = call(f"{base}/health", timeout=2)
                if status == 200:
                    return base
            except (OSError, ValueError):
                pass
        time.sleep(0.5)
    fail(f"the model answers neither at {deployment['url']} nor at {deployment['ip_url']}")


def main():
    deployment = json.loads(input_file("deploy", "deployment.json").read_text())
    try:
        docker = Docker()
        me = docker.own_container()
        joined = docker.connect_network(deployment["network"], me)
    except DockerError as e:
        fail(f"cannot join network {deployment['network']}: {e}")
    print(f"{'joined' if joined else 'already on'} network {deployment['network']} "
          f"(container {me[:12]})")

    base = reachable_base(deployment)
    print(f"calling the model at {base}")
    status, health = call(f"{base}/health")
    if health.get("version") != deployment["version"]:
        fail(f"/health reports version {health.get('version')}, expected "
             f"{deployment['version']}: the old model is still answering")
    started = time.monotonic()
    status, answer = call(f"{base}/predict", {"instances": [FAN, HATER]})
    latency_ms = (time.monotonic() - started) * 1000
    if status != 200:
        fail(f"/predict answered {status}: {answer}")
    fan, hater = answer["predictions"]
    print(f"prediction for a chocolate fan: {fan}")
    print(f"prediction for a lemon-cake hater: {hater}")
    if not (0 <= hater["probability"] < fan["probability"] <= 1):
        fail(f"implausible predictions: fan {fan['probability']}, hater {hater['probability']}")
    status, error = call(f"{base}/predict", {"instances": [{"age": 20}]})
    if status != 400:
        fail(f"an instance without features got {status}, expected 400: {error}")
    print(f"a bad request is refused: {error['error']}")
    print("smoke test passed", file=sys.stdout)
    write_metrics({"latency_ms": latency_ms, "p_fan": fan["probability"],
                   "p_hater": hater["probability"]})


if __name__ == "__main__":
    main()
