from unittest import mock

from support import StageTest
from vishwa_ml import gate


class GateTest(StageTest):
    def run_gate(self, *argv):
        with mock.patch("sys.argv", ["gate", "--stage", "evaluate", *argv]):
            return self.run_quietly(gate.main)

    def test_a_metric_at_the_bar_promotes_and_one_below_it_stops(self):
        self.given("evaluate", "metrics.json", {"accuracy": 0.8})
        code, out, _ = self.run_gate("--metric", "accuracy", "--min", "0.8")
        self.assertIsNone(code)
        self.assertIn("gate passed: evaluate accuracy 0.8000 >= 0.8", out)
        code, _, err = self.run_gate("--metric", "accuracy", "--min", "0.81")
        self.assertEqual(code, 1)
        self.assertIn("below 0.81: not promoting", err)

    def test_an_unknown_metric_is_named_with_the_known_ones(self):
        self.given("evaluate", "metrics.json", {"accuracy": 0.8})
        code, _, err = self.run_gate("--metric", "f1", "--min", "0.5")
        self.assertEqual(code, 1)
        self.assertIn("has no 'f1' (it has ['accuracy'])", err)
