"""Score models on held-out data: the challenger just trained, and the champion on the same rows.

Every scoring keeps its per-example predictions (true label, predicted label, confidence, and
the configured slice columns) in a Parquet file, so the gate can pair the two models example by
example and the report can show per-class metrics, the confusion matrix and calibration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.training import classification_metrics

Predict = Callable[[list[str]], tuple[list[str], list[float]]]
ECE_BINS = 15


@dataclass
class Evaluation:
    """Metrics of one model on one labelled split, and where its per-example predictions are."""

    metrics: dict[str, float]
    predictions_path: str


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


def score(predict: Predict, frame: pd.DataFrame, cfg: TuneopsConfig, out_path: Path) -> Evaluation:
    """Predict every text of a labelled frame, keep the predictions, and compute the metrics."""
    texts = frame[cfg.data.text_column].astype(str).tolist()
    start = time.perf_counter()
    labels, confidences = predict(texts)
    seconds = time.perf_counter() - start
    predictions = pd.DataFrame({"y_true": frame[cfg.data.label_column].astype(str).to_numpy(),
                                "y_pred": [str(x) for x in labels], "confidence": confidences})
    for column in cfg.gate.slice_columns:
        predictions[f"slice:{column}"] = frame[column].astype(str).to_numpy()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_path, index=False)
    metrics = classification_metrics(predictions.y_true.tolist(), predictions.y_pred.tolist())
    correct = (predictions.y_true == predictions.y_pred).to_numpy()
    metrics["ece"] = expected_calibration_error(predictions.confidence.to_numpy(), correct)
    metrics["seconds"] = seconds
    metrics["seconds_per_1000"] = seconds / max(len(texts), 1) * 1000
    return Evaluation(metrics, str(out_path))


def per_class_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per true label."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = sorted(set(predictions.y_true))
    p, r, f, n = precision_recall_fscore_support(predictions.y_true, predictions.y_pred, labels=labels,
                                                 zero_division=0)
    return pd.DataFrame({"label": labels, "precision": p, "recall": r, "f1": f, "support": n})


def confusion(predictions: pd.DataFrame) -> pd.DataFrame:
    labels = sorted(set(predictions.y_true) | set(predictions.y_pred))
    return pd.crosstab(pd.Categorical(predictions.y_true, labels), pd.Categorical(predictions.y_pred, labels),
                       rownames=["true"], colnames=["predicted"], dropna=False)


def plot_confusion(matrix: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(6, 0.28 * len(matrix))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report_files(evaluation: Evaluation, out_dir: Path) -> dict[str, Path]:
    """Per-class CSV, confusion matrix CSV + PNG next to the predictions."""
    predictions = pd.read_parquet(evaluation.predictions_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"per_class": out_dir / "per_class.csv", "confusion_csv": out_dir / "confusion_matrix.csv",
             "confusion_png": out_dir / "confusion_matrix.png"}
    per_class_table(predictions).to_csv(files["per_class"], index=False)
    matrix = confusion(predictions)
    matrix.to_csv(files["confusion_csv"])
    plot_confusion(matrix, files["confusion_png"])
    return files


def classifier_predict(model_dir: str, cfg: TuneopsConfig) -> Predict:
    from tuneops.models import Classifier

    classifier = Classifier(model_dir, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        out = classifier.predict(texts)
        return out.labels, out.confidences

    return predict


def registered_predict(name: str, version: str) -> Predict:
    from tuneops.scoring import load_model

    model = load_model(name, version)

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        out = model.predict(pd.DataFrame({"text": texts}))
        return out["label"].astype(str).tolist(), out["confidence"].astype(float).tolist()

    return predict


@task(name="evaluate-challenger", cache_policy=NO_CACHE)
def evaluate_challenger(model_dir: str, test_path: str, cfg: TuneopsConfig, out_dir: Path,
                        run_id: str) -> Evaluation:
    """Accuracy, macro-F1, per-class metrics, confusion matrix and calibration on the test split."""
    from tuneops import tracking

    evaluation = score(classifier_predict(model_dir, cfg), pd.read_parquet(test_path), cfg,
                       out_dir / "challenger_test.parquet")
    tracking.log_metrics(run_id, {f"test_{k}": v for k, v in evaluation.metrics.items()})
    files = write_report_files(evaluation, out_dir / "report")
    tracking.log_artifacts(run_id, out_dir / "report", "evaluation")
    per_class = pd.read_csv(files["per_class"])
    tracking.log_metrics(run_id, {f"test_f1.{row.label}": row.f1 for row in per_class.itertuples()})
    return evaluation


@dataclass
class ChampionScores:
    """The champion's version and its scores on the current (and previous) test split."""

    version: str
    current: Evaluation
    champion_previous: Evaluation | None = None
    challenger_previous: Evaluation | None = None


def previous_test_split(name: str, version: str, current_fingerprint: str, out_dir: Path) -> str | None:
    """The champion's own test split, when it differs from the current one (new data arrived)."""
    from tuneops.tracking import client

    mv = client().get_model_version(name, version)
    if mv.tags.get("tuneops.split.test.fingerprint") in (None, current_fingerprint) or not mv.run_id:
        return None
    return client().download_artifacts(mv.run_id, "splits/test.parquet", str(out_dir))


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def score_champion(model_dir: str, test_path: str, test_fingerprint: str, cfg: TuneopsConfig, out_dir: Path,
                   run_id: str) -> ChampionScores | None:
    """Re-score the champion on *this* run's test split (and both models on its previous one).

    Comparing with the champion's own recorded metrics would compare different test sets.
    """
    return rescore_champion(cfg, test_path, test_fingerprint, out_dir, run_id, registered_predict,
                            lambda: classifier_predict(model_dir, cfg), score)


def rescore_champion(cfg: TuneopsConfig, test_path: str, test_fingerprint: str, out_dir: Path, run_id: str,
                     load_champion: Callable[[str, str], Any], load_challenger: Callable[[], Any],
                     score_with: Callable[[Any, pd.DataFrame, TuneopsConfig, Path], Evaluation]
                     ) -> ChampionScores | None:
    """The champion on this test split; both models on the champion's previous test split when it differs.

    Shared by both task families: ``load_champion(name, version)`` and ``load_challenger()`` give the
    models' predict functions, ``score_with`` scores one of them on a frame.
    """
    from tuneops import registry, tracking

    name = cfg.registry.model_name
    version = registry.alias_version(name, "champion")
    if version is None:
        return None
    champion = load_champion(name, version)
    scores = ChampionScores(version, score_with(champion, pd.read_parquet(test_path), cfg,
                                                out_dir / "champion_test.parquet"))
    tracking.log_metrics(run_id, {f"champion_test_{k}": v for k, v in scores.current.metrics.items()})
    tracking.set_tags(run_id, {"tuneops.champion_version": version})
    previous = previous_test_split(name, version, test_fingerprint, out_dir / "previous")
    if previous is not None:
        frame = pd.read_parquet(previous)
        if all(c in frame.columns for c in cfg.gate.slice_columns):
            scores.champion_previous = score_with(champion, frame, cfg, out_dir / "champion_previous.parquet")
            scores.challenger_previous = score_with(load_challenger(), frame, cfg,
                                                    out_dir / "challenger_previous.parquet")
            tracking.log_metrics(run_id, {f"previous_test_{k}": v for k, v in
                                          scores.challenger_previous.metrics.items()})
    return scores


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str) -> str:
    """The evaluation report a reviewer reads: headline metrics, per-class table, gate reasoning."""
    m = challenger.metrics
    per_class = per_class_table(pd.read_parquet(challenger.predictions_path))
    lines = [f"# Evaluation of {cfg.registry.model_name}", "",
             f"Test split: accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**, "
             f"expected calibration error {m['ece']:.4f}, {m['seconds_per_1000']:.2f} s per 1,000 predictions.", "",
             decision_md, "", "## Per class", "", "| label | precision | recall | F1 | support |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.label} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.support} |"
              for r in per_class.sort_values("f1").itertuples()]
    lines += ["", "Confusion matrix: `evaluation/confusion_matrix.png` and `.csv` on the MLflow run."]
    return "\n".join(lines)


def publish(markdown: str, run_id: str, description: str, files: tuple[str, ...] = ()) -> str:
    """The evaluation report as an MLflow artifact (with ``files`` beside it) and a Prefect markdown artifact."""
    from tuneops import tracking

    tracking.log_text(run_id, markdown, "evaluation/report.md")
    for path in files:
        tracking.client().log_artifact(run_id, path, "evaluation")
    create_markdown_artifact(markdown, key="evaluation-report", description=description)
    return markdown


@task(name="publish-report")
def publish_report(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str, run_id: str) -> str:
    """Publish the classifier's evaluation report."""
    return publish(report_markdown(cfg, challenger, decision_md), run_id, "Test metrics and gate reasoning")
