"""What a registered classifier carries: its model card and its MLflow pyfunc (label and confidence per text)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.data.validation import POLICY_TAG
from tuneops.training.merge_check import card_lines as merge_check_lines

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.trainer import TrainResult


def model_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
               trained: TrainResult) -> str:
    """A markdown model card: data, method, metrics, gate decision, intended use and limits."""
    labels = ", ".join(trained.labels[:20]) + (f" and {len(trained.labels) - 20} more" if len(trained.labels) > 20
                                                else "")
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        f"Classify short customer texts into {len(trained.labels)} labels ({labels}). Input: a DataFrame with a "
        "`text` column; output: `label` and `confidence` (softmax probability) per row.", "",
        "## Data",
        f"- source `{cfg.data.source()}`, fingerprint `{tags['tuneops.data.fingerprint']}`",
        "- split (hash-based, stable as data grows): " + ", ".join(
            f"{n} {splits.sizes[n]} rows (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        *[f"- data policy validation.{k.removeprefix(POLICY_TAG)}: {v}" for k, v in sorted(tags.items())
          if k.startswith(POLICY_TAG)],
        "", "## Training",
        f"- base model `{cfg.model.base}`, method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, "
        f"lr {cfg.training.learning_rate:g}, max length {cfg.model.max_length} tokens",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, expected calibration error "
        f"{metrics['ece']:.4f}; per-class metrics and the confusion matrix are in the run's `evaluation/` folder."
        + (f" Baseline {tags['tuneops.baseline.name']} on the same test rows: {cfg.gate.primary_metric} "
           f"{float(tags[f'tuneops.baseline.test_{cfg.gate.primary_metric}']):.4f}; lift "
           f"{float(tags[f'tuneops.lift_over_baseline.{cfg.gate.primary_metric}']):+.4f}, CI "
           f"{tags['tuneops.lift_over_baseline.ci']}." if "tuneops.baseline.name" in tags else ""), "",
        *merge_check_lines(tags),
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Knows only the labels above; every input gets one of them, however unrelated (watch confidence and "
        "drift).",
        f"- Texts longer than {cfg.model.max_length} tokens are truncated.",
        "- Quality was measured on held-out rows of the same source; other channels or periods may differ.",
    ])


def pyfunc() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The pyfunc (label and confidence per text), an input example and an output example (the signature)."""
    from tuneops.families.classification.pyfunc import TextClassifierModel

    return (TextClassifierModel(), pd.DataFrame({"text": ["I still have not received my new card"]}),
            pd.DataFrame({"label": ["card_arrival"], "confidence": [0.9]}))
