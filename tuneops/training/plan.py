"""What a task family hands the shared trainer: a leaf module, so families and the trainer share it without
importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneops.training.merge_check import MergeCheck


@dataclass
class TrainingPlan:
    """What a task family hands the shared trainer (``TaskFamily.plan_training``).

    The loop (checkpoints, S3 mirroring, resume, memory preflight, torchrun/DeepSpeed, export and its
    check) is the same for every family; the plan supplies the parts that differ.
    """

    tokenizer: Any
    load_base: Callable[[], Any]
    """A freshly loaded base model of the family's model class (called again to export or rebuild)."""
    train_dataset: Any
    eval_dataset: Any
    collator: Any
    metric: str
    """Validation metric that selects the best epoch (``loss`` and ``perplexity`` are minimised)."""
    best_validation: Callable[[Any, dict[str, float]], dict[str, float]]
    """(trained model, the Trainer's final evaluation) -> the validation metrics recorded for the run (rank 0)."""
    verify_export: Callable[[Path, dict[str, float]], None]
    """Reload the exported folder as serving will and require it to reproduce ``best_validation``."""
    compute_metrics: Callable[[Any], dict[str, float]] | None = None
    trainer_class: Any = None
    """The Trainer subclass to train with (None: ``transformers.Trainer``)."""
    final_evaluation: bool = True
    """Pass the restored epoch's Trainer validation metrics to ``best_validation`` (read from the Trainer's log,
    :func:`tuneops.training.engine.best_evaluation`); families that measure validation themselves turn it off."""
    labels: list[str] = field(default_factory=list)
    save_extra: Callable[[Path], None] = lambda model_dir: None
    """Write family files beside the exported model (e.g. generation settings)."""
    compare_merged: Callable[[Any, Any], MergeCheck] | None = None
    """(the trained model with its adapter unmerged, a copy with the adapter merged into the base weights) -> their
    row-by-row comparison on the validation split (the family's ``merge_check.py``); the trainer calls it for methods
    that can merge (:mod:`tuneops.training.merge_check`). None: the family offers none, nothing is recorded."""
    peft_task_type: str | None = None
    """PEFT's task type when it depends on the base model (language_modeling: an encoder or a decoder); None: the
    family's ``peft_task_type``."""
