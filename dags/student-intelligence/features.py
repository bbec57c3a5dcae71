"""features: students joined to their enrollments → training.csv, one row per enrollment.

Each row: the course, the student's features, the midterm and assignments, and `passed`.
"""

import pandas as pd

from vishwa_ml.io_paths import input_file, output_file, write_json, write_metrics

import cohort


def main():
    input_file("validate", "report.json")  # only validated data goes on
    students = pd.read_csv(input_file("generate", "students.csv"))
    enrollments = pd.read_csv(input_file("generate", "enrollments.csv"))
    training = cohort.join(students, enrollments).sort_values(["course", *cohort.FEATURES])
    training.to_csv(output_file("training.csv"), index=False)
    write_json("feature_spec.json", {"features": cohort.FEATURES, "target": cohort.TARGET,
                                     "key_field": "course"})
    print(f"training set: {len(training)} rows, features {', '.join(cohort.FEATURES)}")
    write_metrics({"rows": len(training), "features": len(cohort.FEATURES)})


if __name__ == "__main__":
    main()
