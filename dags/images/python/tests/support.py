"""What the unit tests share: a stage's /vishwa/in and /vishwa/out in a temporary folder."""

import contextlib
import io
import json
import tempfile
import unittest
from pathlib import Path

from vishwa_ml import io_paths


class StageTest(unittest.TestCase):
    """Points vishwa_ml.io_paths at fresh `in` and `out` folders for each test."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.inputs = Path(folder.name) / "in"
        self.outputs = Path(folder.name) / "out"
        self.inputs.mkdir()
        saved = io_paths.IN, io_paths.OUT
        io_paths.IN, io_paths.OUT = self.inputs, self.outputs
        self.addCleanup(lambda: setattr(io_paths, "IN", saved[0])
                        or setattr(io_paths, "OUT", saved[1]))

    def given(self, stage, name, value):
        """An earlier stage's output, as JSON."""
        (self.inputs / stage).mkdir(exist_ok=True)
        (self.inputs / stage / name).write_text(json.dumps(value))

    def written(self, name):
        return json.loads((self.outputs / name).read_text())

    def run_quietly(self, function, *args, **kwargs):
        """Calls `function`; returns (its exit code or None, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        code = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                function(*args, **kwargs)
            except SystemExit as e:
                code = e.code
        return code, out.getvalue(), err.getvalue()
