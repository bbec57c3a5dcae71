import io
import json
import os
import socketserver
import tarfile
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler

from vishwa_ml import dockerapi


class FakeEngine(BaseHTTPRequestHandler):
    """Answers like the Docker Engine: /version, and a 404 with its message otherwise."""

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "unix"

    def do_GET(self):
        if self.path == "/version":
            self.answer(200, {"Version": "99.0"})
        else:
            self.answer(404, {"message": f"no such container: {self.path}"})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class DockerApiTest(unittest.TestCase):
    """The client over a real unix socket; the engine behind it is a stand-in."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.socket = os.path.join(folder.name, "docker.sock")
        server = socketserver.ThreadingUnixStreamServer(self.socket, FakeEngine)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)

    def test_calls_decode_the_engines_json(self):
        docker = dockerapi.Docker(self.socket, timeout=10)
        self.assertEqual(docker.version(), {"Version": "99.0"})

    def test_a_failed_call_carries_the_engines_message(self):
        docker = dockerapi.Docker(self.socket, timeout=10)
        with self.assertRaisesRegex(dockerapi.DockerError,
                                    "GET /containers/x/json: 404 no such container"):
            docker.call("GET", "/containers/x/json")

    def test_a_missing_socket_says_how_to_mount_it(self):
        with self.assertRaisesRegex(dockerapi.DockerError, "--allow-mount /var/run/docker.sock"):
            dockerapi.Docker(self.socket + ".absent")

    def test_a_build_context_is_a_tar_of_the_files(self):
        data = dockerapi.tar_context({"Dockerfile": b"FROM x\n", "model.pkl": b"\x00\x01"})
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            self.assertEqual(tar.getnames(), ["Dockerfile", "model.pkl"])
            self.assertEqual(tar.extractfile("Dockerfile").read(), b"FROM x\n")
