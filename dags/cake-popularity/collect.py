"""collect: this batch of survey answers → survey.csv (synthetic, seeded, reproducible).

    python3 collect.py --rows 2000 --seed 7 [--bad-batch true]

--bad-batch true writes a broken export (out-of-range values, blanks, unknown flavours, a
duplicate id, a missing column) so the validate stage has something to refuse.
"""

import argparse

from vishwa_ml.io_paths import flag, output_file, write_metrics

import survey


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--bad-batch", type=flag, default=False)
    args = parser.parse_args()
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")

    df = survey.generate(args.rows, args.seed)
    if args.bad_batch:
        df = survey.corrupt(df, args.seed)
        print("bad_batch=true: writing a deliberately broken batch")
    df.to_csv(output_file("survey.csv"), index=False)
    print(f"collected {len(df)} survey answers (seed {args.seed}) into survey.csv")
    print(df.head(5).to_string(index=False))
    write_metrics({"rows": len(df), "bad_batch": int(args.bad_batch)})


if __name__ == "__main__":
    main()
