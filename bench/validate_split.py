"""Validation and split at scale: BANKING77 replicated to N rows (default 1,000,000).

Runs the default validation suite (Great Expectations checks plus rows per class, imbalance,
conflicting labels, personal data, token-length report on a 20,000-row sample) and the
hash-based split on the same frame, timing each. Goals on 2 cores (issue 3): validation <= 15 s,
split <= 5 s for 1,000,000 rows. Replication makes every text a duplicate; the duplicate check
therefore reports (policy: warn), which is part of the work measured. `--distinct` appends the
row number to every text (the worst case for the per-distinct-text work).

    .venv/bin/python bench/validate_split.py [--rows N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distinct", action="store_true",
                        help="append the row number to every text, so no two texts are equal (worst case)")
    args = parser.parse_args()

    from tuneops import settings

    settings.configure_environment()
    import great_expectations  # noqa: F401  (import time is not validation time)
    import pandas as pd

    from tuneops import families
    from tuneops.config import validate_config
    from tuneops.data.splits import split_frame

    base = pd.read_csv(ROOT / "data/banking77/train.csv", dtype=str)
    df = pd.concat([base] * (args.rows // len(base) + 1), ignore_index=True).head(args.rows)
    if args.distinct:
        df["text"] = df["text"] + " #" + pd.Series(range(len(df))).astype(str)
    cfg = validate_config({"data": {"path": "data/banking77/train.csv", "label_column": "category"}})

    start = time.perf_counter()
    report = families.of(cfg).validate(df, cfg, None)
    validation = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        split_frame(df, cfg.split_data(), cfg.split, Path(tmp))
        split = time.perf_counter() - start

    kind = "all texts distinct" if args.distinct else "BANKING77 x100, 10,003 distinct texts"
    print(f"\n=== validate + split: {len(df):,} rows ({kind}) ===")
    print(f"validation ({len(report.checks)} checks, passed={report.passed})  {validation:6.1f} s   goal <= 15 s")
    print(f"split (hash, leakage check, 3 Parquet files)    {split:6.1f} s   goal <= 5 s")


if __name__ == "__main__":
    main()
