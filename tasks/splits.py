"""The split-data task: split the validated data (tuneops.data.splits), store the files with the run, report sizes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops.config import DataConfig, SplitConfig
from tuneops.data.rows import fingerprint
from tuneops.data.splits import SplitResult, split_frame


@task(name="split-data", cache_policy=NO_CACHE)
def split_dataset(df: pd.DataFrame, data: DataConfig, cfg: SplitConfig, out_dir: Path, run_id: str) -> SplitResult:
    """Split the validated data, store the split files with the run, and report their sizes."""
    from tuneops.registry import tracking

    result = split_frame(df, data, cfg, out_dir)
    tracking.log_artifacts(run_id, out_dir, "splits")
    columns = [data.text_column, data.label_column]
    frames = {"dataset": (df, data.source(), fingerprint(df, columns))}
    frames.update({name: (pd.read_parquet(path), f"{data.source()}#split={name}", result.fingerprints[name])
                   for name, path in result.paths.items()})
    tracking.log_datasets(run_id, frames, targets=data.label_column)
    tracking.log_params(run_id, {f"split.{n}.rows": s for n, s in result.sizes.items()})
    tracking.set_tags(run_id, {f"tuneops.split.{n}.fingerprint": f for n, f in result.fingerprints.items()})
    create_markdown_artifact(result.to_markdown(), key="data-split", description="Split sizes and fingerprints")
    return result
