"""validate: checks the three tables before anything learns from them.

Per table: columns, missing values, numeric ranges; then unique ids, known courses, every
enrollment pointing at a known student and course, a 0/1 target. Prints a report and exits 1
when a check fails, so nothing downstream trains on a broken export.
"""

import pandas as pd

from vishwa_ml.io_paths import input_file
from vishwa_ml.validation import check, report

import cohort


def table_checks(name, df, columns, numeric):
    out = []
    missing = [c for c in columns if c not in df.columns]
    out.append(check(f"{name}: columns", not missing, f"missing {missing}" if missing else ""))
    for col in [c for c in columns if c in df.columns]:
        blank = int(df[col].isna().sum())
        out.append(check(f"{name}.{col}: no missing values", blank == 0,
                         f"{blank} blank" if blank else ""))
    for col, (lo, hi) in numeric.items():
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = int((values.isna() & df[col].notna()).sum() + ((values < lo) | (values > hi)).sum())
            out.append(check(f"{name}.{col}: within [{lo}, {hi}]", bad == 0,
                             f"{bad} values out of range or not numbers" if bad else ""))
    return out


def main():
    students = pd.read_csv(input_file("generate", "students.csv"))
    courses = pd.read_csv(input_file("generate", "courses.csv"))
    enrollments = pd.read_csv(input_file("generate", "enrollments.csv"))

    checks = []
    checks += table_checks("students", students, cohort.STUDENT_COLUMNS, cohort.STUDENT_NUMERIC)
    checks += table_checks("courses", courses, cohort.COURSE_COLUMNS, {"difficulty": (1, 5)})
    checks += table_checks("enrollments", enrollments, cohort.ENROLLMENT_COLUMNS,
                           cohort.ENROLLMENT_NUMERIC)
    if "student_id" in students.columns:
        dup = int(students["student_id"].duplicated().sum())
        checks.append(check("students.student_id: unique", dup == 0,
                            f"{dup} duplicates" if dup else ""))
    if "course" in courses.columns:
        unknown = sorted(set(courses["course"]) - set(cohort.COURSES))
        checks.append(check("courses: known", not unknown,
                            f"unknown {unknown}" if unknown else ""))
    if {"student_id", "course"} <= set(enrollments.columns):
        orphans = int((~enrollments["student_id"].isin(students.get("student_id", []))).sum())
        checks.append(check("enrollments → students", orphans == 0,
                            f"{orphans} enrollments of unknown students" if orphans else ""))
        strays = int((~enrollments["course"].isin(courses.get("course", []))).sum())
        checks.append(check("enrollments → courses", strays == 0,
                            f"{strays} enrollments in unknown courses" if strays else ""))
        twice = int(enrollments.duplicated(["student_id", "course"]).sum())
        checks.append(check("enrollments: once per course", twice == 0,
                            f"{twice} repeated enrollments" if twice else ""))
    if cohort.TARGET in enrollments.columns:
        bad = int((~enrollments[cohort.TARGET].isin([0, 1])).sum())
        checks.append(check("enrollments.passed: 0 or 1", bad == 0,
                            f"{bad} other values" if bad else ""))

    report(f"validation report: {len(students)} students, {len(courses)} courses, "
           f"{len(enrollments)} enrollments", checks,
           summary={"students": len(students), "courses": len(courses),
                    "enrollments": len(enrollments)})


if __name__ == "__main__":
    main()
