"""The synthetic college: students, the courses they take, and whether they passed.

A student's chance of passing a course follows a hidden rule (prior grades, attendance,
study hours, the midterm and assignments help; a part-time job and a hard course hurt) with
noise, and each course weighs those differently, so one model per course earns its keep.
Used by generate.py (the training cohort) and drift.py (a fresh cohort, optionally shifted).
"""

import numpy as np
import pandas as pd

COURSES = {
    # course: (difficulty 1-5, credits, weight on study hours, weight on the midterm)
    "maths": (4, 4, 0.10, 0.060),
    "physics": (4, 4, 0.08, 0.055),
    "biology": (3, 3, 0.06, 0.045),
    "economics": (2, 3, 0.04, 0.040),
    "literature": (2, 2, 0.03, 0.030),
}
STUDENT_NUMERIC = {
    # column: (min, max) accepted by validation
    "age": (16, 40),
    "prior_gpa": (0.0, 10.0),
    "attendance": (0.0, 1.0),
    "study_hours": (0.0, 60.0),
    "part_time_job": (0, 1),
}
ENROLLMENT_NUMERIC = {"midterm": (0.0, 100.0), "assignments_done": (0.0, 1.0)}
STUDENT_COLUMNS = ["student_id", *STUDENT_NUMERIC]
COURSE_COLUMNS = ["course", "difficulty", "credits"]
ENROLLMENT_COLUMNS = ["student_id", "course", *ENROLLMENT_NUMERIC, "passed"]
FEATURES = [*[c for c in STUDENT_NUMERIC], *ENROLLMENT_NUMERIC]
TARGET = "passed"


def generate(students, seed, courses=None, shift=0.0):
    """(students, courses, enrollments) frames; `shift` > 0 makes a weaker, busier cohort."""
    courses = list(courses or COURSES)
    unknown = [c for c in courses if c not in COURSES]
    if unknown:
        raise ValueError(f"unknown courses {unknown}; known: {sorted(COURSES)}")
    rng = np.random.default_rng(seed)
    n = students
    s = pd.DataFrame({
        "student_id": np.arange(1, n + 1),
        "age": np.clip(rng.normal(19.5 + 2 * shift, 1.8, n).round(), 16, 40).astype(int),
        "prior_gpa": np.clip(rng.normal(7.0 - 1.2 * shift, 1.3, n), 0, 10).round(2),
        "attendance": np.clip(rng.beta(8 - 3 * min(shift, 2), 2, n), 0, 1).round(3),
        "study_hours": np.clip(rng.gamma(4, 3.5 - shift * 0.8 if shift < 3 else 1, n), 0, 60)
        .round(1),
        "part_time_job": (rng.random(n) < 0.3 + 0.25 * min(shift, 2)).astype(int),
    })
    c = pd.DataFrame([(name, *COURSES[name][:2]) for name in courses], columns=COURSE_COLUMNS)

    rows = []
    for student in s.itertuples(index=False):
        taken = rng.choice(courses, size=min(len(courses), int(rng.integers(2, 4))),
                           replace=False)
        for course in taken:
            difficulty, _, w_hours, w_mid = COURSES[course]
            ability = (student.prior_gpa - 7) * 0.6 + (student.attendance - 0.8) * 4
            midterm = float(np.clip(rng.normal(62 + 8 * ability - 4 * (difficulty - 3), 12),
                                    0, 100))
            assignments = float(np.clip(rng.beta(6 + 2 * student.attendance, 2), 0, 1))
            logit = 2.0 * (ability * 0.5 + w_hours * (student.study_hours - 12)
                           + w_mid * (midterm - 60) + 2.0 * (assignments - 0.75)
                           - 0.5 * student.part_time_job - 0.3 * (difficulty - 3) + 0.4)
            passed = int(rng.random() < 1 / (1 + np.exp(-logit)))
            rows.append((student.student_id, course, round(midterm, 1), round(assignments, 3),
                         passed))
    e = pd.DataFrame(rows, columns=ENROLLMENT_COLUMNS)
    return s, c, e


def join(students, enrollments):
    """One row per enrollment with the student's features: what the models learn from."""
    return enrollments.merge(students, on="student_id", how="inner")[
        ["course", *FEATURES, TARGET]]
