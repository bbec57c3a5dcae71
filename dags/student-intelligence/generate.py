"""generate: a synthetic cohort → students.csv, courses.csv, enrollments.csv (seeded).

    python3 generate.py --students 1500 --seed 11
"""

import argparse

from vishwa_ml.io_paths import output_file, write_metrics

import cohort


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    if args.students < 1:
        parser.error(f"--students must be at least 1, got {args.students}")

    students, courses, enrollments = cohort.generate(args.students, args.seed)
    students.to_csv(output_file("students.csv"), index=False)
    courses.to_csv(output_file("courses.csv"), index=False)
    enrollments.to_csv(output_file("enrollments.csv"), index=False)
    print(f"generated {len(students)} students, {len(courses)} courses, "
          f"{len(enrollments)} enrollments (seed {args.seed})")
    print(enrollments.groupby("course")["passed"].agg(["count", "mean"])
          .rename(columns={"count": "enrolled", "mean": "pass_rate"}).round(3).to_string())
    write_metrics({"students": len(students), "courses": len(courses),
                   "enrollments": len(enrollments),
                   "pass_rate": float(enrollments["passed"].mean())})


if __name__ == "__main__":
    main()
