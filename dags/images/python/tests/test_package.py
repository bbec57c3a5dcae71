import os
import unittest
from unittest import mock

from vishwa_ml import package


class PackageTest(unittest.TestCase):
    def test_the_version_tag_is_the_run_id_as_a_docker_tag(self):
        with mock.patch.dict(os.environ, {"VISHWA_RUN_ID": "Run 42/B+" + "x" * 200}):
            tag = package.version_tag()
        self.assertTrue(tag.startswith("run-42-b-xx"), tag)
        self.assertEqual(len(tag), 128)

    def test_the_model_card_lists_features_models_and_metrics(self):
        meta = {"name": "cakes", "version": "v1", "task": "will they like it", "built": "now",
                "run": "r1", "dag": "cake-popularity", "library": "scikit-learn",
                "trained_rows": 900, "features": ["age", "flavour"], "key_field": "course",
                "models": ["maths", "physics"], "default": "maths"}
        card = package.model_card(meta, {"accuracy": 0.91234}, {"age": 19})
        self.assertIn("# Model card: cakes v1", card)
        self.assertIn("- features: age, flavour", card)
        self.assertIn("- one model per `course`: maths, physics (default `maths`)", card)
        self.assertIn("| accuracy | 0.9123 |", card)
        self.assertIn('{"instances": [{"age": 19}]}', card)

    def test_the_model_image_runs_the_installed_server(self):
        self.assertIn(f"FROM {package.BASE_IMAGE}\n", package.DOCKERFILE)
        self.assertIn('"vishwa_ml.serve"', package.DOCKERFILE)
