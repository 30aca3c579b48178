"""The load-data task: read the company dataset and apply the configured subset (tuneops.data.rows does the work)."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import DataConfig
from tuneops.data.rows import select_subset
from tuneops.errors import DataError


def _is_data_error(state) -> bool:  # noqa: ANN001 - a Prefect State
    """Bad data is not transient: do not retry it (boto3 already retried the network)."""
    try:
        state.result()
    except DataError:
        return True
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return False
    return False


@task(name="load-data", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=3,
      retry_condition_fn=lambda task, run, state: not _is_data_error(state))
def load_dataset(cfg: DataConfig) -> pd.DataFrame:
    """Read the dataset named in the config and apply the configured subset."""
    from tuneops.data.storage import read_dataset

    return select_subset(read_dataset(cfg.path), cfg)
