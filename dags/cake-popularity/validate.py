"""validate: checks survey.csv before anything learns from it; a bad batch stops the run.

Schema (every column present, nothing unexpected), types, missing values, value ranges,
known flavours, unique respondent ids, a 0/1 target and a minimum row count. Prints a report
of every check, writes it as report.json, and exits 1 when any check fails.
"""

import argparse

import pandas as pd

from vishwa_ml import validation
from vishwa_ml.io_paths import input_file

import survey

MAX_EXAMPLES = 5


def rows_of(mask):
    """Data-file line numbers (header is line 1) of the first offending rows."""
    lines = [int(i) + 2 for i in mask[mask].index[:MAX_EXAMPLES]]
    more = int(mask.sum()) - len(lines)
    return ", ".join(map(str, lines)) + (f" and {more} more" if more > 0 else "")


def run_checks(df, min_rows):
    checks = []

    def check(name, ok, detail=""):
        checks.append(validation.check(name, ok, detail))

    missing_cols = [c for c in survey.COLUMNS if c not in df.columns]
    extra_cols = [c for c in df.columns if c not in survey.COLUMNS]
    check("schema: required columns", not missing_cols,
          f"missing {missing_cols}; the export must have {survey.COLUMNS}" if missing_cols else "")
    check("schema: no unexpected columns", not extra_cols,
          f"unexpected {extra_cols}" if extra_cols else "")
    check(f"at least {min_rows} rows", len(df) >= min_rows, f"{len(df)} rows")

    for col in [c for c in survey.COLUMNS if c in df.columns]:
        blank = df[col].isna()
        check(f"{col}: no missing values", not blank.any(),
              f"{int(blank.sum())} blank, at lines {rows_of(blank)}" if blank.any() else "")

    for col, (lo, hi) in survey.NUMERIC.items():
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        not_number = values.isna() & df[col].notna()
        check(f"{col}: numeric", not not_number.any(),
              f"{int(not_number.sum())} not numbers, at lines {rows_of(not_number)}"
              if not_number.any() else "")
        out = values.notna() & ((values < lo) | (values > hi))
        check(f"{col}: within [{lo}, {hi}]", not out.any(),
              f"{int(out.sum())} out of range (e.g. {values[out].iloc[0]:g}), at lines "
              f"{rows_of(out)}" if out.any() else "")

    for col, allowed in survey.CATEGORICAL.items():
        if col not in df.columns:
            continue
        unknown = df[col].notna() & ~df[col].isin(allowed)
        check(f"{col}: known values", not unknown.any(),
              f"{int(unknown.sum())} unknown ({sorted(set(df[col][unknown]))}, expected one of "
              f"{allowed}), at lines {rows_of(unknown)}" if unknown.any() else "")

    if "respondent_id" in df.columns:
        dup = df["respondent_id"].duplicated(keep=False) & df["respondent_id"].notna()
        check("respondent_id: unique", not dup.any(),
              f"{int(dup.sum())} rows share an id, at lines {rows_of(dup)}" if dup.any() else "")
    if survey.TARGET in df.columns:
        bad = ~df[survey.TARGET].isin([0, 1])
        check(f"{survey.TARGET}: 0 or 1", not bad.any(),
              f"{int(bad.sum())} other values, at lines {rows_of(bad)}" if bad.any() else "")
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-rows", type=int, default=50)
    args = parser.parse_args()

    path = input_file("collect", "survey.csv")
    df = pd.read_csv(path)
    validation.report(
        f"validation report for {path.name} ({len(df)} rows, {len(df.columns)} columns)",
        run_checks(df, args.min_rows),
        summary={"rows": len(df)},
        metrics={"rows": len(df), "missing_values": int(df.isna().sum().sum())},
        on_failure="; fix the export (or the collect stage) and run again. Nothing "
                   "downstream will run.",
        on_success=f", {len(df)} rows")


if __name__ == "__main__":
    main()
