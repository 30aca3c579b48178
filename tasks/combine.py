"""The combine-adapters task: the weighted combination of registered LoRA adapters
(:func:`tuneops.training.combine.combine`) as one candidate, with its sources logged on the run."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.training.combine import combine
from tuneops.training.trainer import TrainResult


@task(name="combine-adapters", cache_policy=NO_CACHE)
def combine_adapters_task(cfg: TuneopsConfig, sources: list[str], weights: list[float], out_dir: Path,
                          run_id: str) -> TrainResult:
    """Build the combined candidate; it is then evaluated, gated and registered like a trained one."""
    from tuneops.registry import tracking

    result = combine(cfg, sources, weights, out_dir)
    tracking.log_params(run_id, {"combine.sources": ",".join(sources), "combine.weights": str(weights)})
    return result
