"""The fine-tune task: the shared trainer (tuneops.training.trainer) in this process or in a distributed launch."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.data.splits import SplitResult
from tuneops.training.trainer import TrainResult, launch_distributed, train


@task(name="check-base-model", cache_policy=NO_CACHE)
def check_base_model(cfg: TuneopsConfig) -> str:
    """Resolve model.base before any data is read (a packaged model is converted once, into the model cache)."""
    from tuneops.training.base_models import preflight

    return preflight(cfg.model.base, cfg.model.task, cfg.model.pooling)


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str) -> TrainResult:
    """Fine-tune with the configured method, evaluating on the validation split every epoch."""
    from tuneops.registry import tracking

    if cfg.training.distributed.launcher == "none":
        result = train(cfg, splits, out_dir, run_id)
        assert result is not None  # a single process is rank 0
    else:
        result = launch_distributed(cfg, splits, out_dir, run_id)
    tracking.log_metrics(run_id, {"train_seconds": result.train_seconds,
                                  "trainable_params": result.trainable_params, "epochs_run": result.epochs_run,
                                  **{f"best_validation_{k}": v for k, v in result.best_validation.items()}})
    if result.merge_check:  # merged vs unmerged on the validation split (tuneops.training.merge_check)
        tracking.set_tags(run_id, result.merge_check)
    return result
