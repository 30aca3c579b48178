"""The transformers Trainer set up from the one config: its arguments, its callbacks (MLflow metrics, progress,
early stopping) and the best epoch's evaluation.

The rest of what every family's training shares is one module a job beside this one: precision (bf16 on CPUs),
optim (parameter groups), deepspeed, checkpoints (and their S3 mirror), export (adapters checked, merged or
base + adapter) and memory (the preflight).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuneops.config import TuneopsConfig
from tuneops.training import logger
from tuneops.training.deepspeed import deepspeed_config
from tuneops.training.precision import mixed_precision


def training_arguments(cfg: TuneopsConfig, output_dir: Path, metric: str, **overrides: Any) -> Any:
    """TrainingArguments from the config: epoch-wise evaluation and checkpoints, best epoch restored."""
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    bf16, fp16 = mixed_precision(cfg)
    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        label_smoothing_factor=t.label_smoothing,
        warmup_steps=t.warmup_ratio,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=not metric.endswith(("loss", "perplexity")),
        train_sampling_strategy="group_by_length",
        logging_steps=10,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        args["ddp_backend"] = "gloo"
    if t.distributed.launcher == "deepspeed":
        args["deepspeed"] = deepspeed_config(cfg, world)
    args.update(overrides)
    return TrainingArguments(**args)


def quiet(trainer: Any) -> Any:
    """Drop the Trainer's own printer of raw log dicts: the Progress callback logs them readably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def callbacks(cfg: TuneopsConfig, run_id: str | None) -> list[Any]:
    """MLflow metrics per logging step, a progress line per log, early stopping when configured."""
    import time

    from transformers import EarlyStoppingCallback, TrainerCallback

    from tuneops import progress
    from tuneops.registry import tracking

    class Progress(TrainerCallback):
        """Loss curves and validation metrics to MLflow; a readable progress line, with the pace and the time
        left, to the log."""

        began, first_step = time.perf_counter(), 0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.began, self.first_step = time.perf_counter(), state.global_step  # a resumed run's steps, not ours

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            numbers = {k.replace("eval_", "validation_"): v for k, v in (logs or {}).items()
                       if isinstance(v, int | float) and not k.endswith(("_runtime", "per_second"))}
            if not numbers or not state.is_world_process_zero:
                return
            if run_id:
                tracking.log_metrics(run_id, numbers, step=state.global_step)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if k != "epoch")
            per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            pace = progress.training(state.global_step, state.max_steps, self.first_step,
                                     time.perf_counter() - self.began, per_step)
            logger().info("step %d/%d (epoch %.2f): %s; %s", state.global_step, state.max_steps, state.epoch or 0,
                          shown, pace)

    found: list[Any] = [Progress()]
    if cfg.training.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
    return found




def best_evaluation(trainer: Any) -> dict[str, float]:
    """The validation metrics of the epoch the Trainer restored at the end (``load_best_model_at_end``).

    Every epoch is evaluated during training and the restored weights are that epoch's own, so evaluating them
    again after training repeats a full validation pass for the same numbers (about 6 s of the demo's run on
    2 cores, more on larger data). They are read from the Trainer's log instead; only when the log lacks that
    epoch's entry (a run resumed from a checkpoint written without it) is the pass run again. The exported model
    is still re-scored against these numbers (``TrainingPlan.verify_export``).
    """
    state = trainer.state
    if state.best_global_step is not None:
        for entry in reversed(state.log_history):
            if entry.get("step") == state.best_global_step and "eval_loss" in entry:
                return {k: float(v) for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()
