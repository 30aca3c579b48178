"""Company data as rows: stable hashes, content fingerprints and the configured subset (pure functions)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuneops.errors import DataError

if TYPE_CHECKING:
    from tuneops.config import DataConfig


def stable_hash(values: pd.Series, salt: str = "") -> np.ndarray:
    """A uint64 hash per value that is the same on every machine and pandas 2.x version."""
    return pd.util.hash_pandas_object(values.astype(str), index=False, hash_key=(salt + "tuneops" * 3)[:16]).to_numpy()


def fingerprint(df: pd.DataFrame, columns: list[str]) -> str:
    """Content hash of the given columns, independent of row order and file format."""
    if df.empty:
        return hashlib.sha256(b"empty").hexdigest()[:16]
    rows = pd.util.hash_pandas_object(df[columns].astype(str), index=False).to_numpy()
    digest = hashlib.sha256(np.sort(rows).tobytes())
    digest.update(",".join(columns).encode())
    return digest.hexdigest()[:16]


def select_subset(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Keep the configured labels and at most ``max_rows_per_label`` rows each, deterministically."""
    if cfg.select_labels is not None and cfg.label_column in df:
        missing = sorted(set(cfg.select_labels) - set(df[cfg.label_column].astype(str)))
        if missing:
            raise DataError(f"data.select_labels names labels the dataset does not have: {', '.join(missing)}")
        df = df[df[cfg.label_column].astype(str).isin(cfg.select_labels)]
    if cfg.max_rows_per_label is not None and cfg.label_column in df and cfg.text_column in df:
        order = stable_hash(df[cfg.text_column], salt="subset")
        df = (df.assign(_order=order).sort_values("_order", kind="stable")
                .groupby(cfg.label_column, sort=False).head(cfg.max_rows_per_label)
                .drop(columns="_order").sort_index())
    return df.reset_index(drop=True)
