"""Batch scoring tasks: thin Prefect wrappers over :mod:`tuneops.serving.scoring`, where the logic (and its tests) live.

Nothing here retries: boto3 already retries transient S3 errors, and the failures that remain
(no champion, a missing column, a bad path) are the user's to fix, so a retry would only repeat them.
"""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.serving import scoring


@task(name="resolve-version", cache_policy=NO_CACHE)
def resolve_version(name: str, version: str | None) -> str:
    """Pin the champion alias (or the requested version) to one version number for the whole batch."""
    resolved = scoring.resolve_version(name, version)
    get_run_logger().info("scoring with %s v%s%s", name, resolved, "" if version else " (champion)")
    return resolved


@task(name="read-texts", cache_policy=NO_CACHE)
def read_texts(uri: str, text_column: str) -> pd.DataFrame:
    """Read the batch from a path or S3 prefix and check its text column before any model loads."""
    return scoring.read_texts(uri, text_column)


@task(name="score-texts", cache_policy=NO_CACHE)
def score_texts(name: str, version: str, frame: pd.DataFrame, text_column: str) -> pd.DataFrame:
    """Load that exact registered version and predict a label and confidence for every text."""
    return scoring.score_texts(name, version, frame, text_column)


@task(name="append-prediction-log", cache_policy=NO_CACHE)
def append_prediction_log(scored: pd.DataFrame, output: str, fmt: scoring.LogFormat) -> str:
    """Add timestamp and request ids and write one new file under ``<output>/date=YYYY-MM-DD/``."""
    uri = scoring.append_prediction_log(scored, output, fmt)
    get_run_logger().info("appended %d predictions to %s", len(scored), uri)
    return uri


@task(name="score-into-log", cache_policy=NO_CACHE)
def score_into_log(config: TuneopsConfig, version: str, input: str, output: str,
                   fmt: scoring.LogFormat) -> scoring.BatchResult:
    """Read, score (on serving.runtime) and append the batch chunk by chunk; on long inputs the library logs the
    rows done, their rate and the time left (tuneops.serving.scoring, forwarded to the run's log)."""
    result = scoring.score_into_log(config, version, input, output, fmt)
    get_run_logger().info("appended %d predictions to %s", result.rows, result.uri)
    return result
