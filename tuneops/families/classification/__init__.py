"""Text classification: a label per text, a sequence classifier (``model.task: classification``, the default).

Data contract (contract.py): a text column and a label column, checked with Great Expectations (nulls,
blanks, lengths, control characters, duplicates, allowed labels, row counts) and pandas (rows per class,
class imbalance, conflicting labels, personal data, token lengths), with the data policies that remove rows
before the split. The split keys on the text (or the id / group column). Metrics (evaluation.py): accuracy,
macro-F1, per-class F1, calibration (ECE); the gate compares labels example by example; the baseline is
TF-IDF + logistic regression. Registered (packaging.py) as a pyfunc that returns ``label`` and
``confidence`` per text; the prediction log and every drift signal apply. What it adds to the config:
config.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.evaluation.metrics import classification_metrics
from tuneops.families import INPUT_SIGNALS, Comparison, TaskFamily, register, require_log_columns
from tuneops.families.classification.config import CONFIG
from tuneops.families.classification.contract import apply_policies, prepare, validate_frame
from tuneops.families.classification.evaluation import (
    classifier_predict,
    evaluate,
    fit_tfidf,
    registered_predict,
    report_markdown,
    score,
    tfidf_baseline,
)
from tuneops.families.classification.packaging import model_card, pyfunc

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.training.plan import TrainingPlan

__all__ = ["apply_policies", "fit_tfidf", "plan_training", "prediction_drift", "prepare", "validate_frame"]

# ----------------------------------------------------------------------------- training


class _Encoded:
    """Token ids per row, unpadded: the collator pads each batch to its own longest row."""

    def __init__(self, enc: dict[str, list[Any]], labels: list[int]):
        self.enc, self.labels = enc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def verify_export(model_dir: Path, validation: pd.DataFrame, cfg: TuneopsConfig, expected: dict[str, float]) -> None:
    """Reload the exported folder the way serving will and re-score validation: it must match training."""
    from tuneops.errors import TrainingError
    from tuneops.families.classification.predictor import Classifier

    out = Classifier(model_dir, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)
    texts = validation[cfg.data.text_column].astype(str).tolist()
    got = classification_metrics(validation[cfg.data.label_column].astype(str).tolist(), out.predict(texts).labels)
    metric = cfg.gate.primary_metric
    if abs(got[metric] - expected[metric]) > cfg.training.export_tolerance:
        raise TrainingError(
            f"the exported model does not reproduce the trained one: validation {metric} {got[metric]:.4f} after "
            f"reloading vs {expected[metric]:.4f} in training (tolerance {cfg.training.export_tolerance}); the "
            f"export of method '{cfg.training.method}' is broken, nothing was registered")


def plan_training(cfg: TuneopsConfig, frames: dict[str, pd.DataFrame], base: str) -> TrainingPlan:
    """A sequence classifier over every label of the split files; the best epoch by the gate's primary metric."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from tuneops.evaluation.metrics import classification_metrics
    from tuneops.families.classification import merge_check
    from tuneops.families.classification.pooling import classifier_class
    from tuneops.training.merge_check import sample
    from tuneops.training.plan import TrainingPlan

    text, label = cfg.data.text_column, cfg.data.label_column
    labels = sorted(set().union(*(set(f[label].astype(str)) for f in frames.values())))
    label2id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base)

    def load_base() -> Any:
        model = classifier_class(cfg.model.pooling).from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
        model.config.tuneops_max_length = cfg.model.max_length
        return model

    def encode(frame: pd.DataFrame) -> _Encoded:
        enc = tokenizer(frame[text].astype(str).tolist(), truncation=True, max_length=cfg.model.max_length)
        return _Encoded(dict(enc), [label2id[v] for v in frame[label].astype(str)])

    def compute_metrics(pred: Any) -> dict[str, float]:
        y_pred = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return classification_metrics([labels[i] for i in pred.label_ids], [labels[i] for i in y_pred.argmax(-1)])

    def best_validation(model: Any, evaluated: dict[str, float]) -> dict[str, float]:
        return {k.removeprefix("eval_"): float(v) for k, v in evaluated.items()
                if k in ("eval_accuracy", "eval_macro_f1")}

    def compare_merged(unmerged: Any, merged: Any) -> Any:
        """Every validation row (a seeded sample beyond serving.runtime_check_rows): the same label?"""
        rows = sample(frames["validation"], cfg.serving.runtime_check_rows)
        return merge_check.compare(unmerged, merged, tokenizer, rows[text].astype(str).tolist(), cfg.model.max_length,
                                   cfg.training.eval_batch_size)

    return TrainingPlan(
        tokenizer=tokenizer, load_base=load_base, train_dataset=encode(frames["train"]),
        eval_dataset=encode(frames["validation"]), collator=DataCollatorWithPadding(tokenizer),
        metric=cfg.gate.primary_metric, compute_metrics=compute_metrics, best_validation=best_validation,
        verify_export=lambda model_dir, best: verify_export(model_dir, frames["validation"], cfg, best),
        compare_merged=compare_merged, labels=labels)


# ----------------------------------------------------------------------------- monitoring


def prediction_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: TuneopsConfig | None = None
                     ) -> list[Comparison]:
    """Predicted labels (Jensen-Shannon) and confidences (normed Wasserstein) against the reference's."""
    frames = []
    for frame, source in ((reference, "prediction reference"), (current, "prediction log")):
        require_log_columns(frame, source, ("label", "confidence"))
        frames.append(pd.DataFrame({"label": frame["label"].astype(str).to_numpy(),
                                    "confidence": pd.to_numeric(frame["confidence"], errors="coerce").to_numpy()}))
    return [Comparison({"prediction": ("label", "jensenshannon"), "confidence": ("confidence", "wasserstein")},
                       *frames)]


register(TaskFamily.extend(
    CONFIG,
    noun="classifier",
    peft_task_type="SEQ_CLS",
    input_column=lambda cfg: cfg.data.text_column,
    validate=validate_frame,
    prepare_data=prepare,
    plan_training=plan_training,
    evaluate=evaluate,
    challenger=classifier_predict,
    registered=registered_predict,
    score=score,
    report_markdown=report_markdown,
    report_attachments=lambda evaluation: (),
    model_card=model_card,
    pyfunc=pyfunc,
    baseline=tfidf_baseline,
    search_metric=lambda cfg: (cfg.gate.primary_metric, True),
    prediction_columns=("text", "label", "confidence", "model_version"),
    drift_signals=(*INPUT_SIGNALS, "prediction", "confidence"),
    prediction_drift=prediction_drift,
))
