"""How a classifier is scored: accuracy, macro-F1, per-class F1 and calibration on a labelled frame, the
per-example predictions the gate pairs, the report files (per-class table, confusion matrix), the TF-IDF +
logistic regression baseline fitted on the run's own training split, and the report a reviewer reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tuneops.evaluation.metrics import classification_metrics, expected_calibration_error
from tuneops.evaluation.results import Evaluation

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult

Predict = Callable[[list[str]], tuple[list[str], list[float]]]


def evaluate(model_dir: str, frame: pd.DataFrame, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """Accuracy, macro-F1, calibration; per-class metrics and the confusion matrix as report files."""
    evaluation = score(classifier_predict(model_dir, cfg), frame, cfg, out_dir / "challenger_test.parquet")
    files = write_report_files(evaluation, out_dir / "report")
    per_class = pd.read_csv(files["per_class"])
    evaluation.detail_metrics = {f"test_f1.{row.label}": row.f1 for row in per_class.itertuples()}
    evaluation.report_dir = str(out_dir / "report")
    return evaluation


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
    from tuneops.families.classification.predictor import Classifier

    classifier = Classifier(model_dir, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        out = classifier.predict(texts)
        return out.labels, out.confidences

    return predict


def registered_predict(name: str, version: str) -> Predict:
    from tuneops.serving.scoring import load_model

    model = load_model(name, version)

    def predict(texts: list[str]) -> tuple[list[str], list[float]]:
        out = model.predict(pd.DataFrame({"text": texts}))
        return out["label"].astype(str).tolist(), out["confidence"].astype(float).tolist()

    return predict



BASELINE_NAME = "TF-IDF + logistic regression"
# Word 1-2-grams and character 3-5-grams inside word boundaries (robust to typos and inflections), sublinear tf;
# one multinomial logistic regression. C=10: TF-IDF rows are unit-norm, so the default C=1 underfits short texts.
TFIDF_C = 10.0
TFIDF_MAX_ITER = 300


def fit_tfidf(texts: list[str], labels: list[str], seed: int = 0) -> Predict:
    """Fit TF-IDF (word + character n-grams) and logistic regression; a Predict that returns the label and its
    probability. Seconds on CPU for ten thousand short texts."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2, dtype=np.float32))
    model = make_pipeline(features, LogisticRegression(C=TFIDF_C, max_iter=TFIDF_MAX_ITER, random_state=seed))
    with warnings.catch_warnings():  # the iteration cap bounds the time; a nearly converged fit scores the same
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(texts, labels)

    def predict(batch: list[str]) -> tuple[list[str], list[float]]:
        if not batch:
            return [], []
        probabilities = model.predict_proba(batch)
        best = probabilities.argmax(axis=1)
        return [str(model.classes_[i]) for i in best], probabilities.max(axis=1).astype(float).tolist()

    return predict


def tfidf_baseline(frame: pd.DataFrame, splits: SplitResult, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """TF-IDF + logistic regression fitted on the run's own training split, scored on the same test rows as the
    fine-tuned model (per-example predictions, so the gate pairs them): what a bag-of-words model gets for free."""
    train = pd.read_parquet(splits.paths["train"])
    text, label = cfg.data.text_column, cfg.data.label_column
    predict = fit_tfidf(train[text].astype(str).tolist(), train[label].astype(str).tolist(), cfg.training.seed)
    evaluation = score(predict, frame, cfg, out_dir / "baseline_test.parquet")
    evaluation.name = BASELINE_NAME
    evaluation.metrics["train_rows"] = float(len(train))
    return evaluation


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str,
                    baseline: Evaluation | None = None) -> str:
    """The evaluation report a reviewer reads: headline metrics, the baseline, per-class table, gate reasoning."""
    m = challenger.metrics
    per_class = per_class_table(pd.read_parquet(challenger.predictions_path))
    lines = [f"# Evaluation of {cfg.registry.model_name}", "",
             f"Test split: accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**, "
             f"expected calibration error {m['ece']:.4f}, {m['seconds_per_1000']:.2f} s per 1,000 predictions.", ""]
    if baseline is not None:
        b = baseline.metrics
        lines += [f"Baseline ({baseline.name}, fitted on the same {int(b.get('train_rows', 0))} training rows, "
                  f"scored on the same test rows): accuracy {b['accuracy']:.4f}, macro-F1 {b['macro_f1']:.4f}; "
                  f"lift of the fine-tuned model: accuracy **{m['accuracy'] - b['accuracy']:+.4f}**, macro-F1 "
                  f"**{m['macro_f1'] - b['macro_f1']:+.4f}** (the paired confidence interval is the gate's "
                  "'lift over baseline' check below; gate.min_lift_over_baseline is its bar).", ""]
        base_f1 = per_class_table(pd.read_parquet(baseline.predictions_path)).set_index("label").f1
        per_class["baseline_f1"] = per_class.label.map(base_f1).fillna(0.0)
    lines += [decision_md, "", "## Per class", ""]
    if baseline is not None:
        lines += ["| label | precision | recall | F1 | baseline F1 | support |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.label} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.baseline_f1:.3f} | "
                  f"{r.support} |" for r in per_class.sort_values("f1").itertuples()]
    else:
        lines += ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {r.label} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.support} |"
                  for r in per_class.sort_values("f1").itertuples()]
    lines += ["", "Confusion matrix: `evaluation/confusion_matrix.png` and `.csv` on the MLflow run."]
    return "\n".join(lines)
