"""Deterministic, hash-based train/validation/test split that stays stable as data grows.

Each row's split is a function of its own key only (the id column, else the normalised text),
hashed with a fixed salt into [0, 1) and compared with the configured ratios. So:

- the same data always splits the same way, on any machine;
- appending rows never moves an old row: today's test set never leaks into tomorrow's training;
- every label is split at the configured ratios in expectation (stratified by construction,
  since the hash is independent of the label);
- rows whose normalised texts are identical share one split (no leakage through duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuneops.data.rows import fingerprint, stable_hash
from tuneops.errors import DataError

if TYPE_CHECKING:
    from tuneops.config import DataConfig, SplitConfig

SPLITS = ("train", "validation", "test")


@dataclass
class SplitResult:
    """Where the split files are, and what is in them."""

    paths: dict[str, str]
    sizes: dict[str, int]
    fingerprints: dict[str, str]
    class_counts: dict[str, dict[str, int]]

    def to_markdown(self) -> str:
        rows = ["| split | rows | labels | fingerprint |", "|---|---|---|---|"]
        rows += [f"| {s} | {self.sizes[s]} | {len(self.class_counts[s])} | `{self.fingerprints[s]}` |"
                 for s in SPLITS]
        return "# Data split\n\n" + "\n".join(rows)


def normalise(texts: pd.Series) -> pd.Series:
    """Lower-case, trim and collapse whitespace: the identity used for duplicates and leakage.

    Each distinct text is normalised once (company data repeats itself a lot).
    """
    codes, uniques = pd.factorize(texts.astype(str))
    normalised = np.array([" ".join(t.lower().split()) for t in uniques], dtype=object)
    return pd.Series(normalised[codes] if len(codes) else [], index=texts.index, dtype=object)


def assign_splits(df: pd.DataFrame, data: DataConfig, cfg: SplitConfig, norm: pd.Series | None = None) -> pd.Series:
    """Name the split of every row ('train', 'validation' or 'test'), row by row from its key."""
    norm = normalise(df[data.text_column]) if norm is None else norm
    if cfg.strategy == "time":
        return _time_splits(df, data, cfg, norm)
    key = df[data.group_column] if data.group_column else df[data.id_column] if data.id_column else norm
    u = pd.Series(stable_hash(key.astype(str), salt=cfg.salt) / np.float64(2**64), index=df.index)
    # Identical texts follow the row with the smallest hash, so they can never straddle splits; with
    # a group column, a text shared by two groups pulls them together (min over both).
    u = u.groupby(norm.to_numpy()).transform("min")
    if data.group_column:
        u = u.groupby(df[data.group_column].astype(str).to_numpy()).transform("min")
    u = u.to_numpy()
    out = np.where(u < cfg.test_ratio, "test",
                   np.where(u < cfg.test_ratio + cfg.validation_ratio, "validation", "train"))
    return pd.Series(out, index=df.index, name="split")


def _time_splits(df: pd.DataFrame, data: DataConfig, cfg: SplitConfig, norm: pd.Series) -> pd.Series:
    """Most recent rows are test, the next most recent validation; duplicates follow their earliest row."""
    stamps = pd.to_datetime(df[data.timestamp_column], errors="coerce", utc=True)
    earliest = stamps.groupby(norm.to_numpy()).transform("min")
    rank = earliest.rank(method="first", ascending=False, pct=True).to_numpy()
    out = np.where(rank <= cfg.test_ratio, "test",
                   np.where(rank <= cfg.test_ratio + cfg.validation_ratio, "validation", "train"))
    # A text seen at several times takes the split of its earliest row.
    out = pd.Series(out, index=df.index).groupby(norm.to_numpy()).transform("last")
    return out.rename("split")


def check_leakage(splits: dict[str, pd.DataFrame], text_column: str,
                  normalised: dict[str, pd.Series] | None = None) -> None:
    """Fail if any normalised test or validation text also appears in train."""
    norm = normalised or {name: normalise(part[text_column]) for name, part in splits.items()}
    train = pd.Index(norm["train"].unique())
    for name in ("validation", "test"):
        leaked = norm[name][norm[name].isin(train)]
        if len(leaked):
            raise DataError(f"{len(leaked)} {name} texts also appear in train (e.g. {leaked.iloc[0][:60]!r}); "
                            "this would inflate the metrics. Check data.id_column: rows with the same text "
                            "must share a key.")


def split_frame(df: pd.DataFrame, data: DataConfig, cfg: SplitConfig, out_dir: Path) -> SplitResult:
    """Split, check for leakage and empty splits, and write one Parquet file per split."""
    norm = normalise(df[data.text_column])
    assignment = assign_splits(df, data, cfg, norm)
    masks = {name: (assignment == name).to_numpy() for name in SPLITS}
    parts = {name: df[mask].reset_index(drop=True) for name, mask in masks.items()}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise DataError(f"the {', '.join(empty)} split is empty with {len(df)} rows; add data or raise "
                        "split.validation_ratio / split.test_ratio")
    check_leakage(parts, data.text_column, {name: norm[mask] for name, mask in masks.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [data.text_column, data.label_column]
    paths = {}
    for name, part in parts.items():
        paths[name] = str(out_dir / f"{name}.parquet")
        part.to_parquet(paths[name], index=False)
    return SplitResult(
        paths=paths,
        sizes={n: len(p) for n, p in parts.items()},
        fingerprints={n: fingerprint(p, columns) for n, p in parts.items()},
        class_counts={n: {str(k): int(v) for k, v in p[data.label_column].value_counts().items()}
                      for n, p in parts.items()},
    )
