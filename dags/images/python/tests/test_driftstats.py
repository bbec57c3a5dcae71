import argparse

import numpy as np
import pandas as pd

from support import StageTest
from vishwa_ml import driftstats


def sample(rows, shift, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(20 + 4 * shift, 2, rows),
        "flavour": rng.choice(["lemon", "chocolate"], rows, p=[0.5 - shift / 4, 0.5 + shift / 4]),
    })


def arguments(*argv):
    parser = argparse.ArgumentParser()
    driftstats.add_arguments(parser)
    return parser.parse_args(["--seed", "1", *argv])


class DriftStatsTest(StageTest):
    def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift(self):
        self.assertAlmostEqual(driftstats.psi([0.5, 0.5], [0.5, 0.5]), 0.0)
        reference = sample(2000, 0, 1)
        same = driftstats.numeric_psi(reference["age"], sample(2000, 0, 2)["age"])
        moved = driftstats.numeric_psi(reference["age"], sample(2000, 1, 2)["age"])
        self.assertLess(same, 0.05)
        self.assertGreater(moved, 0.25)
        self.assertGreater(driftstats.ks(reference["age"], sample(2000, 1, 2)["age"]), 0.5)

    def test_the_report_names_the_drifted_features(self):
        rows, metrics, drifted = driftstats.drift_report(
            sample(2000, 0, 1), sample(2000, 1, 2), ["age"],
            {"flavour": ["lemon", "chocolate"]}, 0.2)
        self.assertEqual([r[0] for r in rows], ["age", "flavour"])
        self.assertIn("age", drifted)
        self.assertEqual(metrics["drifted_features"], len(drifted))
        self.assertEqual(metrics["max_psi"], max(r[1] for r in rows))
        self.assertIn("ks_age", metrics)

    def test_no_drift_is_said_and_recorded(self):
        code, out, _ = self.run_quietly(driftstats.judge, sample(2000, 0, 1), sample(2000, 0, 2),
                                        ["age"], {"flavour": ["lemon", "chocolate"]},
                                        arguments(), "retrain")
        self.assertIsNone(code)
        self.assertIn("no drift: every feature's PSI is at most 0.2", out)
        self.assertEqual(self.written("drift.json")["drifted"], [])
        self.assertEqual(self.written("metrics.json")["drifted_features"], 0)

    def test_drift_warns_and_fails_only_when_asked_to(self):
        args = (sample(2000, 0, 1), sample(2000, 1, 2), ["age"], {})
        code, out, _ = self.run_quietly(driftstats.judge, *args, arguments(), "retrain now")
        self.assertIsNone(code)
        self.assertIn("warning: drift above PSI 0.2 in age: retrain now", out)
        code, out, _ = self.run_quietly(driftstats.judge, *args,
                                        arguments("--fail-on-drift", "true"), "retrain now")
        self.assertEqual(code, 1)
        self.assertIn("error: drift above PSI 0.2 in age: retrain now", out)
