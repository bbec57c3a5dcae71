"""A small Docker Engine API client over the unix socket, from Python's standard library.

The package, deploy and smoke stages reach the host's Docker through a mounted
/var/run/docker.sock (`mounts:` in dag.yaml; the worker must allow that path). The image has
no docker CLI: these few calls are all the stages need.
"""

import http.client
import io
import json
import os
import socket
import tarfile
import time
import urllib.parse

DOCKER_SOCKET = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")


class DockerError(Exception):
    """A Docker Engine API call that failed, with the engine's own message."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: http.client does the protocol, this only opens the socket."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Docker:
    def __init__(self, path=DOCKER_SOCKET, timeout=600):
        if not os.path.exists(path):
            raise DockerError(
                f"no Docker socket at {path}; the stage needs "
                f'`mounts: ["/var/run/docker.sock:/var/run/docker.sock"]` and a worker started '
                f"with `--allow-mount /var/run/docker.sock`"
            )
        self.path = path
        self.timeout = timeout

    def _send(self, method, path, query=None, body=None, headers=None):
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        conn = _UnixConnection(self.path, self.timeout)
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=headers)
        return conn, conn.getresponse()

    def call(self, method, path, query=None, body=None, headers=None, ok=(200, 201, 204)):
        """Sends one request; returns the decoded JSON body (or None); raises on a bad status."""
        conn, resp = self._send(method, path, query, body, headers)
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status not in ok:
            raise DockerError(f"{method} {path}: {resp.status} {_message(data)}")
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def version(self):
        return self.call("GET", "/version")

    def build(self, context_tar, tag, labels=None, log=print):
        """Builds an image from a tar context (Dockerfile at its root); returns the image id."""
        query = {"t": tag, "rm": "1", "forcerm": "1"}
        if labels:
            query["labels"] = json.dumps(labels)
        conn, resp = self._send(
            "POST", "/build", query, context_tar, {"Content-Type": "application/x-tar"}
        )
        image_id = None
        try:
            if resp.status != 200:
                raise DockerError(f"POST /build: {resp.status} {_message(resp.read())}")
            # The engine streams one JSON object per line while it builds.
            for line in resp:
                line = line.strip()
                if not line:
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise DockerError(f"image build failed: {event['error'].strip()}")
                if event.get("stream", "").strip():
                    log(f"  build: {event['stream'].rstrip()}")
                aux = event.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = aux["ID"]
        finally:
            conn.close()
        if image_id is None:
            image_id = self.call("GET", f"/images/{tag}/json")["Id"]
        return image_id

    def _status(self, method, path, query=None):
        conn, resp = self._send(method, path, query)
        try:
            data = resp.read()
        finally:
            conn.close()
        return resp.status, data

    def ensure_network(self, name, labels=None):
        """Creates a bridge network `name` unless one exists; returns its id."""
        found = self.call("GET", "/networks", query={"filters": json.dumps({"name": [name]})})
        for net in found or []:
            if net.get("Name") == name:
                return net["Id"]
        created = self.call(
            "POST",
            "/networks/create",
            body={"Name": name, "Driver": "bridge", "CheckDuplicate": True,
                  "Labels": labels or {}},
        )
        return created["Id"]

    def inspect_container(self, name):
        """The container's inspect document, or None when there is none by that name."""
        conn, resp = self._send("GET", f"/containers/{name}/json")
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise DockerError(f"GET /containers/{name}/json: {resp.status} {_message(data)}")
        return json.loads(data)

    def remove_container(self, name):
        """Stops and removes a container; returns whether there was one."""
        status, data = self._status("DELETE", f"/containers/{name}", {"force": "1"})
        if status not in (204, 404):
            raise DockerError(f"DELETE /containers/{name}: {status} {_message(data)}")
        return status == 204

    def create_container(self, name, body):
        return self.call("POST", "/containers/create", query={"name": name}, body=body)["Id"]

    def start_container(self, name):
        self.call("POST", f"/containers/{name}/start", ok=(204, 304))

    def logs(self, name, tail=50):
        """The container's last lines of output (demultiplexed when it has no TTY)."""
        conn, resp = self._send(
            "GET", f"/containers/{name}/logs",
            {"stdout": "1", "stderr": "1", "tail": str(tail)},
        )
        try:
            raw = resp.read()
        finally:
            conn.close()
        out = bytearray()
        while len(raw) >= 8 and raw[0] in (0, 1, 2) and raw[1:4] == b"\0\0\0":
            size = int.from_bytes(raw[4:8], "big")
            out += raw[8:8 + size]
            raw = raw[8 + size:]
        out += raw
        return out.decode(errors="replace")

    def own_container(self):
        """The id of the container this code runs in: Docker names a container's host after
        its id; failing that, the one running container of this stage attempt, found by the
        labels Vishwa's worker puts on it."""
        me = socket.gethostname()
        info = self.inspect_container(me)
        if info is not None:
            return info["Id"]
        run, stage = os.environ.get("VISHWA_RUN_ID"), os.environ.get("VISHWA_STAGE")
        if run and stage:
            filters = {"label": [f"vishwa.run={run}", f"vishwa.stage={stage}"],
                       "status": ["running"]}
            found = self.call("GET", "/containers/json",
                              query={"filters": json.dumps(filters)}) or []
            if len(found) == 1:
                return found[0]["Id"]
        raise DockerError(f"cannot tell which container this is (hostname {me}, run {run}, "
                          f"stage {stage})")

    def connect_network(self, network, container):
        """Joins `container` to `network`; joining twice is not an error."""
        conn, resp = self._send(
            "POST", f"/networks/{network}/connect", body={"Container": container}
        )
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status == 200:
            return True
        message = _message(data)
        if "already exists" in message:
            return False
        raise DockerError(f"POST /networks/{network}/connect: {resp.status} {message}")

    def wait_healthy(self, name, timeout=90, log=print):
        """Waits for the container's healthcheck to pass; raises with its logs if it stops."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            info = self.inspect_container(name)
            if info is None:
                raise DockerError(f"container {name} disappeared while starting")
            state = info["State"]
            if not state.get("Running"):
                raise DockerError(
                    f"container {name} stopped (exit code {state.get('ExitCode')}); its logs:\n"
                    + self.logs(name)
                )
            health = (state.get("Health") or {}).get("Status", "none")
            if health != last:
                log(f"container {name}: {health}")
                last = health
            if health in ("healthy", "none"):
                return info
            time.sleep(0.5)
        raise DockerError(
            f"container {name} not healthy after {timeout}s; its logs:\n" + self.logs(name)
        )


def tar_context(files):
    """A build context: a tar holding `files`, a mapping of path in the context → bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _message(data):
    try:
        return json.loads(data).get("message", "").strip() or data.decode(errors="replace")
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()
