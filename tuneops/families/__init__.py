"""Task families, one module each, found by ``model.task``.

A family is everything that differs between, say, a text classifier and an instruction-tuned causal
LM: the config rules and defaults it adds, its data contract (validation checks and the preparation
of validated rows), what keys the split, how examples are tokenised and collated and which model and
trainer class train them, its metrics and evaluation report, how the champion is re-scored, its
baseline, its model card and MLflow pyfunc, what the prediction log holds and which drift signals
apply. Every module in this package that calls :func:`register` is a family: adding one means adding
a file; the config accepts its name, and the flows, tasks and the trainer reach it through :func:`of`.

Nothing outside this package and the config schema branches on ``model.task`` or a family's name.
Family modules import torch, transformers, Great Expectations and MLflow inside functions (pandas at module
level), so that the config, which imports this package to know the families, stays cheap to import.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tuneops.config import DataConfig, TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.data.validation import ValidationReport
    from tuneops.evaluation.results import Evaluation
    from tuneops.training.plan import TrainingPlan
    from tuneops.training.trainer import TrainResult


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


@dataclass(frozen=True)
class TaskFamily:
    """One task family: what each lifecycle stage does differently for it.

    Callables take the validated config; none of them touches Prefect (tasks and flows wrap them).
    """

    name: str
    summary: str
    noun: str
    """What a model of this family is called in messages ("classifier", "causal LM")."""
    peft_task_type: str
    """PEFT's task type (``SEQ_CLS``, ``CAUSAL_LM``): what the methods in tuneops/methods/ wrap."""
    gate_defaults: dict[str, Any]
    """Gate settings this family uses unless the config sets them (e.g. the primary metric)."""
    config_problems: Callable[[TuneopsConfig], list[str]]
    """Cross-field rules of the whole config for this family; every problem is returned (all at once)."""
    split_data: Callable[[TuneopsConfig], DataConfig]
    """The data section as the split sees it: ``text_column`` keys a row, ``label_column`` is its target."""
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
    accepts: Callable[[dict[str, Any]], str | None] = lambda config: None
    """Given a base model's config.json, why this family cannot train it (None: it can)."""
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
    training_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Training settings this family uses unless the config sets them: ``"*"`` for every method (its ``method``
    key is the family's default method), a method's own entry (its learning rate, ...) over it. Chosen from
    measurements (the README's defaults study)."""


def require_log_columns(frame: pd.DataFrame, source: str, columns: tuple[str, ...]) -> None:
    """Refuse a prediction log (or reference) that lacks what a family's drift signals read."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        from tuneops.errors import DataError

        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (has {list(frame.columns)}); monitoring "
                        "reads the prediction log that score_batch writes for this model's task family")


FAMILIES: dict[str, TaskFamily] = {}


def register(family: TaskFamily) -> TaskFamily:
    FAMILIES[family.name] = family
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
    importlib.import_module(f"{__name__}.{_module.name}")
