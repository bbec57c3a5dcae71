import argparse

from support import StageTest
from vishwa_ml import io_paths


class IoPathsTest(StageTest):
    def test_a_missing_input_exits_1_saying_which_stage_should_provide_it(self):
        code, _, err = self.run_quietly(io_paths.input_file, "train", "model.pkl")
        self.assertEqual(code, 1)
        self.assertIn("train/model.pkl is missing", err)
        self.assertIn("`train` in `needs:`", err)

    def test_an_input_that_exists_is_found(self):
        self.given("train", "metrics.json", {"accuracy": 0.9})
        self.assertEqual(io_paths.input_file("train", "metrics.json"),
                         self.inputs / "train" / "metrics.json")

    def test_metrics_are_written_as_flat_numbers_and_printed(self):
        import numpy as np

        code, out, _ = self.run_quietly(io_paths.write_metrics,
                                        {"accuracy": np.float32(0.5), "rows": 3})
        self.assertIsNone(code)
        self.assertEqual(self.written("metrics.json"), {"accuracy": 0.5, "rows": 3})
        self.assertIn("metric accuracy = 0.5\n", out)
        self.assertIn("metric rows = 3\n", out)

    def test_flag_reads_true_and_false_and_refuses_anything_else(self):
        self.assertIs(io_paths.flag(" True "), True)
        self.assertIs(io_paths.flag("false"), False)
        with self.assertRaisesRegex(argparse.ArgumentTypeError, "expected true or false"):
            io_paths.flag("yes")
