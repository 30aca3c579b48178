"""The trial task of a hyperparameter search: train one configuration with the shared trainer, in a nested run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops import settings
from tuneops.config import TuneopsConfig
from tuneops.data.splits import SplitResult
from tuneops.registry import tracking
from tuneops.training.search import Trial


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
def run_trial(number: int, cfg: TuneopsConfig, overrides: dict[str, Any], splits: SplitResult,
              parent_run_id: str) -> Trial:
    """Train one configuration and score it on validation, in a nested MLflow run."""
    from tuneops.training.trainer import train

    with tracking.run(cfg.registry.experiment, run_name=f"trial-{number}", parent_run_id=parent_run_id,
                      tags={"tuneops.search.trial": str(number)}) as run_id:
        tracking.log_params(run_id, overrides)
        result = train(cfg, splits, settings.runs_dir() / run_id, run_id)
        assert result is not None
        tracking.log_metrics(run_id, {f"best_validation_{k}": v for k, v in result.best_validation.items()})
    return Trial(number, overrides, result.best_validation, run_id, result.train_seconds)
