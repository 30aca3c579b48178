"""Load the company dataset and fingerprint its content."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import DataConfig
from tuneops.errors import DataError


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


def _is_data_error(state) -> bool:  # noqa: ANN001 - a Prefect State
    """Bad data is not transient: do not retry it (boto3 already retried the network)."""
    try:
        state.result()
    except DataError:
        return True
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return False
    return False


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


@task(name="load-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=3,
      retry_condition_fn=lambda task, run, state: not _is_data_error(state))
def load_dataset(cfg: DataConfig) -> pd.DataFrame:
    """Read the dataset named in the config and apply the configured subset."""
    from tuneops.storage import read_dataset

    return select_subset(read_dataset(cfg.path), cfg)
