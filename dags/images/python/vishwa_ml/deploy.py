"""deploy: runs the packaged model image as a container answering predictions over HTTP.

On the Docker network `--network` (created if missing), named `--container`: the previous
version's container of that name is stopped and replaced. The container's port 8080 is also
published on 127.0.0.1:`--host-port` of the Docker host (0: a free port Docker picks) so a
person can curl it. Waits for the image's healthcheck, then writes deployment.json.

    python3 -m vishwa_ml.deploy --container cake-model --network vishwa-examples --host-port 8765
"""

import argparse
import json
import os
import time

from vishwa_ml.dockerapi import Docker, DockerError
from vishwa_ml.io_paths import fail, input_file, write_json, write_metrics

PORT = "8080/tcp"
SECOND = 1_000_000_000  # Docker API durations are in nanoseconds


def main():
    parser = argparse.ArgumentParser(prog="python3 -m vishwa_ml.deploy",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--host-port", type=int, default=0)
    args = parser.parse_args()
    if not 0 <= args.host_port <= 65535:
        parser.error(f"--host-port must be within 0..65535, got {args.host_port}")

    image = json.loads(input_file("package", "image.json").read_text())
    docker = Docker()
    started = time.monotonic()
    try:
        docker.ensure_network(args.network, labels={"vishwa.example": "true"})
        previous = docker.inspect_container(args.container)
        if previous is not None:
            old = previous["Config"]["Image"]
            docker.remove_container(args.container)
            print(f"removed the previous container {args.container} ({old})")
        docker.create_container(args.container, {
            "Image": image["image"],
            "Labels": {
                "vishwa.example-model": image["name"],
                "vishwa.example-version": image["version"],
                "vishwa.example-run": os.environ.get("VISHWA_RUN_ID", ""),
            },
            "ExposedPorts": {PORT: {}},
            "Healthcheck": {
                "Test": ["CMD", "python3", "-m", "vishwa_ml.serve", "--check"],
                "Interval": 2 * SECOND, "Timeout": 3 * SECOND, "StartPeriod": 60 * SECOND,
                "Retries": 3,
            },
            "HostConfig": {
                "NetworkMode": args.network,
                "PortBindings": {PORT: [{"HostIp": "127.0.0.1",
                                         "HostPort": str(args.host_port or "")}]},
                "RestartPolicy": {"Name": "unless-stopped"},
            },
            "NetworkingConfig": {"EndpointsConfig": {args.network: {"Aliases": [args.container]}}},
        })
        docker.start_container(args.container)
        print(f"started {args.container} from {image['image']}; waiting for its healthcheck")
        info = docker.wait_healthy(args.container)
    except DockerError as e:
        fail(str(e))

    ip = info["NetworkSettings"]["Networks"][args.network]["IPAddress"]
    bindings = (info["NetworkSettings"].get("Ports") or {}).get(PORT) or []
    host_port = int(bindings[0]["HostPort"]) if bindings else None
    deployment = {
        "container": args.container,
        "image": image["image"],
        "version": image["version"],
        "network": args.network,
        "ip": ip,
        "url": f"http://{args.container}:8080",
        "ip_url": f"http://{ip}:8080",
        "host_url": f"http://127.0.0.1:{host_port}" if host_port else None,
    }
    write_json("deployment.json", deployment)
    print(f"deployed {image['name']} {image['version']}: {deployment['url']} on network "
          f"{args.network} ({deployment['ip_url']})")
    if host_port:
        print(f"on the Docker host: curl -s {deployment['host_url']}/health")
    write_metrics({"deploy_seconds": time.monotonic() - started,
                   "replaced": int(previous is not None)})


if __name__ == "__main__":
    main()
