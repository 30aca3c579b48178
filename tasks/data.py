"""Load the company dataset and fingerprint its content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import DataConfig
from tuneops.errors import DataError

READERS = {
    ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""]),
    ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
    ".json": lambda p: pd.read_json(p, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one CSV, JSONL or Parquet file, chosen by extension, with errors that say what to fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset {path} does not exist; check data.path (relative paths resolve from "
                        f"{Path.cwd()})")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"dataset {path} has extension '{path.suffix}'; use .csv, .jsonl or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"dataset {path} is empty (0 bytes); export the data again")
    try:
        return reader(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset {path} is not UTF-8 ({exc.reason} at byte {exc.start}); re-export it "
                        "as UTF-8") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"dataset {path} cannot be parsed as {path.suffix[1:].upper()}: {exc}") from None


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


@task(name="load-data", cache_policy=NO_CACHE)
def load_dataset(cfg: DataConfig) -> pd.DataFrame:
    """Read the dataset named in the config and apply the configured subset."""
    return select_subset(read_table(cfg.path), cfg)
