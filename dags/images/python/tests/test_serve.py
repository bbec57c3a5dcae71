import json
import pickle
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

from vishwa_ml import serve


def model_folder(folder):
    """A model as the train stage pickles it: one estimator per course, chosen by `course`."""
    x = pd.DataFrame({"hours": [0, 1, 2, 8, 9, 10] * 5})
    y = [0, 0, 0, 1, 1, 1] * 5
    fitted = LogisticRegression().fit(x, y)
    bundle = {"features": ["hours"], "key_field": "course", "default": "maths",
              "models": {"maths": fitted, "physics": fitted}}
    (folder / "model.pkl").write_bytes(pickle.dumps(bundle))
    (folder / "metadata.json").write_text(json.dumps({"name": "students", "version": "v7"}))
    (folder / "model_card.md").write_text("# Model card\n")


class ServeTest(unittest.TestCase):
    """The prediction server over real HTTP on a free port of 127.0.0.1."""

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        model_folder(Path(cls.folder.name))
        handler = type("TestHandler", (serve.Handler,), {
            "model": serve.Model(cls.folder.name), "log_message": lambda *args: None})
        cls.server = serve.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.folder.cleanup()

    def request(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(self.url + path, data=data, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_health_names_the_model_and_version(self):
        status, body = self.request("/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"status": "ok", "model": "students", "version": "v7"})

    def test_predictions_use_the_model_the_key_field_picks(self):
        status, body = self.request("/predict", {"instances": [
            {"course": "physics", "hours": 10}, {"hours": 0}]})
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["version"], "v7")
        first, second = answer["predictions"]
        self.assertEqual((first["model"], first["label"]), ("physics", 1))
        self.assertEqual((second["model"], second["label"]), ("maths", 0))
        self.assertGreater(first["probability"], 0.5)

    def test_bad_requests_get_400_saying_what_is_wrong(self):
        status, body = self.request("/predict", {"instances": [{"course": "astrology"}]})
        self.assertEqual(status, 400)
        self.assertIn("unknown course 'astrology'", json.loads(body)["error"])
        status, body = self.request("/predict", {"instances": [{"course": "maths"}]})
        self.assertEqual(status, 400)
        self.assertIn("lacks ['hours']", json.loads(body)["error"])
        status, body = self.request("/predict", {"instances": []})
        self.assertEqual(status, 400)
        status, _ = self.request("/nowhere")
        self.assertEqual(status, 404)

    def test_the_card_is_served_at_the_root(self):
        status, body = self.request("/")
        self.assertEqual((status, body), (200, "# Model card\n"))
