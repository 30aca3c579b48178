"""Metrics as pure functions of predictions: classification scores, calibration, generation scores, perplexity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ECE_BINS = 15


def classification_metrics(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in ``y_true``."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(y_true))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def perplexity(predictions: pd.DataFrame) -> float | None:
    """Token-weighted perplexity of the references from per-example nll/tokens; None when not measured."""
    if "nll" not in predictions or predictions.tokens.sum() == 0:
        return None
    return math.exp(float(predictions.nll.sum() / predictions.tokens.sum()))


def generation_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Mean exact match and ROUGE-L, perplexity when the per-example NLL is known, and for JSON-list answers the
    exact set match, the share of valid JSON and the micro-F1 over every (example, label) pair."""
    metrics = {"exact_match": float(predictions.exact_match.mean()), "rouge_l": float(predictions.rouge_l.mean())}
    if "set_match" in predictions:
        tp, fp, fn = (float(predictions[c].sum()) for c in ("tp", "fp", "fn"))
        metrics |= {"set_match": float(predictions.set_match.mean()),
                    "json_valid": float(predictions.json_valid.mean()),
                    "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0}
    measured = perplexity(predictions)
    if measured is not None:
        metrics["perplexity"] = measured
    return metrics
