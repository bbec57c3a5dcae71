"""validate: checks the three tables before anything learns from them.

Per table: columns, missing values, numeric ranges; then unique ids, known courses, every
enrollment pointing at a known student and course, a 0/1 target. Prints a report and exits 1
when a check fails, so nothing downstream trains on a broken export.
"""

import pandas as pd

import cohort
from io_paths import input_file, write_json, write_metrics


def table_checks(name, df, columns, numeric):
    out = []
    missing = [c for c in columns if c not in df.columns]
    out.append((f"{name}: columns", not missing, f"missing {missing}" if missing else ""))
    for col in [c for c in columns if c in df.columns]:
        blank = int(df[col].isna().sum())
        out.append((f"{name}.{col}: no missing values", blank == 0,
                    f"{blank} blank" if blank else ""))
    for col, (lo, hi) in numeric.items():
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = int((values.isna() & df[col].notna()).sum() + ((values < lo) | (values > hi)).sum())
            out.append((f"{name}.{col}: within [{lo}, {hi}]", bad == 0,
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
        checks.append(("students.student_id: unique", dup == 0, f"{dup} duplicates" if dup else ""))
    if "course" in courses.columns:
        unknown = sorted(set(courses["course"]) - set(cohort.COURSES))
        checks.append(("courses: known", not unknown, f"unknown {unknown}" if unknown else ""))
    if {"student_id", "course"} <= set(enrollments.columns):
        orphans = int((~enrollments["student_id"].isin(students.get("student_id", []))).sum())
        checks.append(("enrollments → students", orphans == 0,
                       f"{orphans} enrollments of unknown students" if orphans else ""))
        strays = int((~enrollments["course"].isin(courses.get("course", []))).sum())
        checks.append(("enrollments → courses", strays == 0,
                       f"{strays} enrollments in unknown courses" if strays else ""))
        twice = int(enrollments.duplicated(["student_id", "course"]).sum())
        checks.append(("enrollments: once per course", twice == 0,
                       f"{twice} repeated enrollments" if twice else ""))
    if cohort.TARGET in enrollments.columns:
        bad = int((~enrollments[cohort.TARGET].isin([0, 1])).sum())
        checks.append(("enrollments.passed: 0 or 1", bad == 0, f"{bad} other values" if bad else ""))

    failed = [c for c in checks if not c[1]]
    print(f"validation report: {len(students)} students, {len(courses)} courses, "
          f"{len(enrollments)} enrollments")
    width = max(len(c[0]) for c in checks)
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name:<{width}}  {detail}".rstrip())
    write_json("report.json", [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks])
    write_metrics({"checks": len(checks), "checks_failed": len(failed)})
    if failed:
        print(f"validation failed: {len(failed)} of {len(checks)} checks failed")
        raise SystemExit(1)
    print(f"validation passed: {len(checks)} checks")


if __name__ == "__main__":
    main()
