"""Task families, one folder each, found by ``model.task``.

A family is everything that differs between, say, a text classifier and an instruction-tuned causal
LM: the config fields, rules and defaults it adds (its ``config.py``: :class:`tuneops.families.schema.
FamilyConfig`), its data contract (validation checks and the preparation of validated rows), what keys
the split, how examples are tokenised and collated and which model and trainer class train them, its
metrics and evaluation report, how the champion is re-scored, its baseline, its model card and MLflow
pyfunc, what the prediction log holds and which drift signals apply. Every folder of this package whose
``__init__.py`` calls :func:`register` is a family: adding one means adding a folder; the config
accepts its name and its settings, and the flows, tasks and the trainer reach it through :func:`of`.

Nothing outside this package and the config schema branches on ``model.task`` or a family's name.
Family modules import torch, transformers, Great Expectations and MLflow inside functions (pandas at module
level), and tuneops.config only inside functions too: the config, which imports this package to know the
families (through tuneops.families.schema), stays cheap to import, and is built after every family registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tuneops.families import schema
from tuneops.families.schema import FamilyConfig

if TYPE_CHECKING:
    import pandas as pd

    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.data.validation import ValidationReport
    from tuneops.evaluation.results import Evaluation
    from tuneops.training.plan import TrainingPlan

TrainResult = Any
"""tuneops.training.trainer.TrainResult (the trainer imports this module, so its type is not imported here)."""


INPUT_SIGNALS = ("text", "length", "word_count", "non_letter_share", "unknown_token_share", "embedding")
"""Drift signals on the model's input that monitoring computes for every family (monitoring/drift.py)."""


@dataclass(frozen=True)
class Comparison:
    """Prediction-side drift signals compared on one pair of frames (one Evidently report).

    ``methods`` maps a signal name to (column, method): 'jensenshannon' compares a categorical column,
    'wasserstein' (normed) a numerical one. Frames of one comparison may differ in length from the
    window (e.g. one row per extracted label).
    """

    methods: dict[str, tuple[str, str]]
    reference: pd.DataFrame
    current: pd.DataFrame


@dataclass(frozen=True, kw_only=True)
class TaskFamily(FamilyConfig):
    """One task family: what it adds to the config (:class:`FamilyConfig`: name, fields, defaults, rules) and what
    each lifecycle stage does differently for it.

    Callables take the validated config; none of them touches Prefect (tasks and flows wrap them).
    """

    noun: str
    """What a model of this family is called in messages ("classifier", "causal LM")."""
    peft_task_type: str
    """PEFT's task type (``SEQ_CLS``, ``CAUSAL_LM``): what the methods in tuneops/methods/ wrap."""
    input_column: Callable[[TuneopsConfig], str]
    """The column a registered model reads when it scores a file."""
    validate: Callable[[pd.DataFrame, TuneopsConfig, Path | None], ValidationReport]
    """Every check of the data contract (Data Docs into the folder when one is given)."""
    prepare_data: Callable[[pd.DataFrame, TuneopsConfig], pd.DataFrame]
    """The validated rows as training reads them (e.g. personal data masked under pii_policy: redact)."""
    plan_training: Callable[[TuneopsConfig, dict[str, pd.DataFrame], str], TrainingPlan]
    """Tokeniser, model loader, datasets, collator, metrics and export check for the shared trainer."""
    evaluate: Callable[[str, pd.DataFrame, TuneopsConfig, Path], Evaluation]
    """The freshly trained model (its exported folder) on a labelled frame, with the report files."""
    challenger: Callable[[str, TuneopsConfig], Any]
    """A predictor of the trained model's folder, for :attr:`score` (re-scoring on the previous split)."""
    registered: Callable[[str, str], Any]
    """A predictor of a registered version (name, version), for :attr:`score`."""
    score: Callable[[Any, pd.DataFrame, TuneopsConfig, Path], Evaluation]
    """Score a predictor on a labelled frame; keeps per-example predictions for the gate."""
    report_markdown: Callable[[TuneopsConfig, Evaluation, str, Evaluation | None], str]
    """The evaluation report a reviewer reads (headline metrics, the gate's reasoning, details; the baseline's)."""
    report_attachments: Callable[[Evaluation], tuple[str, ...]]
    """Files logged beside the report on the MLflow run."""
    model_card: Callable[[TuneopsConfig, dict[str, str], SplitResult, dict[str, float], TrainResult], str]
    """The registered version's markdown model card."""
    pyfunc: Callable[[], tuple[Any, pd.DataFrame, pd.DataFrame]]
    """The MLflow PythonModel, an input example and an output example (the signature)."""
    baseline: Callable[[pd.DataFrame, SplitResult, TuneopsConfig, Path], Evaluation] | None = None
    """A reference model scored on the test frame (causal_lm: the zero-shot base); the gate's lift check compares
    the challenger with it (gate.min_lift_over_baseline). None: the family has none yet."""
    search_metric: Callable[[TuneopsConfig], tuple[str, bool]] | None = None
    """(validation metric, higher is better) that tune_hyperparameters ranks trials by; None: no search."""
    prediction_columns: tuple[str, ...] = ()
    """Columns of a prediction-log row (score_batch writes them, monitoring reads them); empty: no log yet.
    The first is the model's input text."""
    drift_signals: tuple[str, ...] = ()
    """Drift signals monitoring can report for this family (each has a monitoring.thresholds field); empty:
    monitoring refuses it. The input-text signals (text, descriptors, embedding) are computed for every family."""
    prediction_drift: Callable[[pd.DataFrame, pd.DataFrame, TuneopsConfig], list[Comparison]] | None = None
    """(prediction reference rows, production log rows, the champion's config) -> the output-side comparisons
    (e.g. predicted labels and confidences; response lengths, cut-off answers, JSON validity)."""
    unsupported: str = ""
    """Why a stage the family does not offer yet (empty log/drift/search) refuses it, and what to do instead."""

    @classmethod
    def extend(cls, config: FamilyConfig, **stages: Any) -> TaskFamily:
        """The family of ``config`` (its folder's config.py) with its lifecycle stages."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(FamilyConfig)}, **stages)


def require_log_columns(frame: pd.DataFrame, source: str, columns: tuple[str, ...]) -> None:
    """Refuse a prediction log (or reference) that lacks what a family's drift signals read."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        from tuneops.errors import DataError

        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (has {list(frame.columns)}); monitoring "
                        "reads the prediction log that score_batch writes for this model's task family")


FAMILIES = cast("dict[str, TaskFamily]", schema.FAMILIES)
"""Every registered family by name: the registry the config reads too (tuneops.families.schema)."""


_REGISTERED_BY: dict[str, str] = {}


def register(family: TaskFamily) -> TaskFamily:
    """Add a family under its name; a name another module registered is refused (tuneops.plugins), naming both."""
    from tuneops.plugins import NameTaken, caller_module

    by = caller_module()
    first = _REGISTERED_BY.get(family.name, by) if family.name in FAMILIES else by
    if first != by:
        raise NameTaken(f"task family '{family.name}' is registered twice: by {first} and by {by}; give one of them "
                        "another name (each task family needs a name of its own)")
    FAMILIES[family.name] = family
    _REGISTERED_BY[family.name] = by
    return family


def get(name: str) -> TaskFamily:
    return FAMILIES[name]


def of(cfg: TuneopsConfig) -> TaskFamily:
    """The family of a validated config (``model.task``)."""
    return FAMILIES[cfg.model.task]


def require(cfg: TuneopsConfig, stage: str, offered: bool) -> None:
    """Refuse a stage the config's family does not offer, with the family's own explanation."""
    if not offered:
        from tuneops.errors import ConfigError

        family = of(cfg)
        raise ConfigError(f"{stage} is not available: {cfg.registry.model_name} is a {family.noun} (model.task: "
                          f"{family.name}); {family.unsupported}")


for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:  # a family is a folder; schema.py is what the families and the config share
        importlib.import_module(f"{__name__}.{_module.name}")
