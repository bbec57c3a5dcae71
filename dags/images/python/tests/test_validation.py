from support import StageTest
from vishwa_ml import validation
from vishwa_ml.validation import check


class ValidationReportTest(StageTest):
    def test_passing_checks_print_aligned_lines_and_record_the_counts(self):
        checks = [check("rows", True, "12 rows"), check("a longer check", True)]
        code, out, _ = self.run_quietly(validation.report, "report for x", checks,
                                        summary={"rows": 12}, metrics={"rows": 12},
                                        on_success=", 12 rows")
        self.assertIsNone(code)
        self.assertIn("report for x\n  ok    rows            12 rows\n", out)
        self.assertIn("validation passed: 2 checks, 12 rows", out)
        report = self.written("report.json")
        self.assertEqual(report["rows"], 12)
        self.assertEqual([c["check"] for c in report["checks"]], ["rows", "a longer check"])
        self.assertEqual(self.written("metrics.json"),
                         {"rows": 12, "checks": 2, "checks_failed": 0})

    def test_a_failed_check_exits_1_after_writing_the_report(self):
        checks = [check("age: within [15, 35]", False, "2 out of range"), check("ids", True)]
        code, out, _ = self.run_quietly(validation.report, "report", checks,
                                        on_failure="; fix the export")
        self.assertEqual(code, 1)
        self.assertIn("  FAIL  age: within [15, 35]  2 out of range", out)
        self.assertIn("validation failed: 1 of 2 checks failed; fix the export", out)
        self.assertFalse(self.written("report.json")["checks"][0]["ok"])
        self.assertEqual(self.written("metrics.json")["checks_failed"], 1)

    def test_a_report_without_checks_is_a_programming_error(self):
        with self.assertRaises(ValueError):
            validation.report("empty", [])
