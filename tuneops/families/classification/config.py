"""What the classification family adds to the config: label subsets, the label policies, pooling, the drift
thresholds of predictions and the runtime agreement check of labels; its metrics, defaults and rules.

The YAML keys stay where users write them (``data.select_labels`` under ``data:``): tuneops/config.py adds
these fields to the shared sections, and refuses them by name in a config of another family.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tuneops.families.schema import Config, FamilyConfig, Metric, Section

NAME = "classification"


class LabelSubset(Section):
    """data: which labels (and how many rows of each) a run keeps."""

    select_labels: list[str] | None = Field(
        None,
        description="Keep only rows with these labels (a subset for demos and quick runs). "
        "Null keeps every label.",
    )
    max_rows_per_label: int | None = Field(
        None, ge=1, description="Cap on rows kept per label, chosen deterministically. Null keeps all."
    )


class LabelPolicies(Section):
    """validation: the checks and data policies of labelled rows."""

    allowed_labels: list[str] | None = Field(
        None, description="If given, every label must be one of these; null accepts any label."
    )
    min_rows_per_class: int = Field(
        10, ge=1, description="Each label needs at least this many rows to be learnable and testable."
    )
    max_class_imbalance: float = Field(
        50.0, ge=1, description="Largest allowed ratio between the most and the least frequent label."
    )
    conflicting_labels: Literal["fail", "drop", "majority", "warn"] = Field(
        "fail", description="model.task classification: texts that are the same after normalisation (case, "
        "whitespace) but carry different labels (e.g. 'No thanks' labelled with three services). 'fail' stops "
        "the run; 'drop' removes every row of such a text; 'majority' keeps the rows with the text's most "
        "frequent label and removes the others (a tie removes every row of that text); 'warn' reports them and "
        "trains on all of them. Applied before the split; the validation report and the version's "
        "tuneops.data_policy.* tags record the decision and the rows removed."
    )
    invalid_texts: Literal["fail", "drop"] = Field(
        "fail", description="model.task classification: rows whose text is null, blank, or shorter than "
        "min_text_chars / longer than max_text_chars. 'fail' stops the run; 'drop' removes them before the split "
        "(recorded like conflicting_labels)."
    )
    rare_classes: Literal["fail", "drop"] = Field(
        "fail", description="model.task classification: labels with fewer than min_rows_per_class rows (after the "
        "other policies). 'fail' stops the run; 'drop' removes every row of such a label before the split, so the "
        "model does not know it (recorded like conflicting_labels)."
    )


class Pooling(Section):
    """model: how a classifier turns a text into one vector."""

    pooling: Literal["cls", "mean"] = Field(
        "cls", description="classification: how a text becomes the one vector the head classifies. 'cls': the "
        "[CLS] token through BERT's dense + tanh pooler (transformers' default); 'mean': the average of the last "
        "hidden states over the text's tokens, the way sentence-transformers models (the packaged MiniLM) were "
        "pre-trained (BERT-family bases only; tuneops/families/classification/pooling.py).")

    @model_validator(mode="after")
    def _pooling_for_classifiers(self) -> Any:
        task = getattr(self, "task", NAME)  # the model section this class is part of
        if self.pooling != "cls" and task != NAME:
            raise ValueError(f"pooling: {self.pooling} applies to task '{NAME}' only (this is task '{task}'); "
                             "remove model.pooling")
        return self


class PredictionThresholds(Section):
    """monitoring.thresholds: drift of a classifier's predictions."""

    prediction: float = Field(0.2, gt=0, le=1, description="Predicted label distribution: Jensen-Shannon distance.")
    confidence: float = Field(0.2, gt=0, description="Prediction confidence: normed Wasserstein distance.")


class LabelAgreement(Section):
    """serving: the agreement a runtime other than fp32 must show with fp32 on a classifier's validation rows."""

    runtime_min_label_agreement: float = Field(
        0.995, gt=0, le=1, description="Classifiers: least share of validation rows on which a runtime must give "
        "fp32's label.")
    runtime_confidence_tolerance: float = Field(
        0.02, ge=0, le=1, description="Classifiers: largest allowed absolute difference, on any validation row, "
        "between a runtime's top-class probability and fp32's.")
    runtime_check_rows: int = Field(
        20_000, ge=1, description="Classifiers: most validation rows compared (a seeded sample when there are "
        "more), by a runtime's agreement check and by the merged-vs-unmerged check at training time.")


METRICS = (
    Metric("accuracy", "accuracy (share of test texts given their label)", correctness=True),
    Metric("macro_f1", "macro_f1 (F1 averaged over the labels, each label counting the same)"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)


def config_problems(cfg: Config) -> list[str]:
    """Gate metrics and labels that a classifier config cannot use."""
    g, problems = cfg.gate, []
    if g.primary_metric not in METRIC_NAMES:
        problems.append(f"gate.primary_metric '{g.primary_metric}' is not a classification metric; use "
                        f"{' or '.join(METRIC_NAMES)}")
    for what, names in (("floors", g.floors), ("also_compare", g.also_compare)):
        wrong = sorted(k for k in names if k not in METRIC_NAMES)
        if wrong:
            problems.append(f"gate.{what} {', '.join(wrong)} set but model.task is '{NAME}'; use "
                            f"{' or '.join(METRIC_NAMES)}")
    selected, allowed = cfg.data.select_labels, cfg.validation.allowed_labels
    outside = sorted(set(selected or ()) - set(allowed)) if allowed else []
    if outside:
        problems.append(f"data.select_labels has labels outside validation.allowed_labels: {', '.join(outside)}")
    return problems


def accepts(config: dict[str, Any]) -> str | None:
    """Any transformers model with a model_type gets a sequence-classification head."""
    return None if config.get("model_type") else "its config.json names no model_type; save it with save_pretrained"


CONFIG = FamilyConfig(
    name=NAME,
    summary="text -> label, a sequence classifier",
    fields={"data": (LabelSubset,), "validation": (LabelPolicies,), "model": (Pooling,),
            "monitoring.thresholds": (PredictionThresholds,), "serving": (LabelAgreement,)},
    metrics=METRICS,
    gate_defaults={"primary_metric": "accuracy", "floors": {"accuracy": 0.0}, "min_lift_over_baseline": 0.0},
    # Measured on three datasets nobody tuned tuneops for (README, "Defaults that work on new data"): full
    # fine-tuning of a small encoder beats LoRA there and is faster on CPU; early stopping bounds the epochs.
    training_defaults={
        "*": {"method": "full", "epochs": 10, "early_stopping_patience": 2, "label_smoothing": 0.1},
        "full": {"learning_rate": 1e-4, "head_learning_rate": 3e-3, "layer_lr_decay": 0.9, "weight_decay": 0.01},
        "lora": {"learning_rate": 2e-3},
    },
    config_problems=config_problems,
    accepts=accepts,
)
