"""Text classification: a label per text, a sequence classifier (``model.task: classification``, the default).

Data contract: a text column and a label column, checked with Great Expectations (nulls, blanks,
lengths, control characters, duplicates, allowed labels, row counts) and pandas (rows per class, class
imbalance, conflicting labels, personal data, token lengths). The split keys on the text (or the id /
group column). Metrics: accuracy, macro-F1, per-class F1, calibration (ECE); the gate compares labels
example by example. Registered as a pyfunc that returns ``label`` and ``confidence`` per text; the
prediction log and every drift signal apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.data import pii
from tuneops.data.splits import normalise
from tuneops.data.validation import (
    CONTROL_CHARS,
    EXAMPLES,
    POLICY_TAG,
    Check,
    Expectation,
    Severity,
    ValidationReport,
    masked_examples,
    required_columns,
    run_gx,
    show,
    token_lengths,
)
from tuneops.evaluation.metrics import classification_metrics, expected_calibration_error
from tuneops.evaluation.results import Evaluation
from tuneops.families import INPUT_SIGNALS, Comparison, TaskFamily, register, require_log_columns

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.plan import TrainingPlan
    from tuneops.training.trainer import TrainResult

Predict = Callable[[list[str]], tuple[list[str], list[float]]]

# ----------------------------------------------------------------------------- data contract


def _gx_suite(cfg: TuneopsConfig) -> list[Expectation]:
    import great_expectations.expectations as gxe

    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    suite: list[Expectation] = [
        ("row count", f"the dataset must have {v.min_rows}..{v.max_rows} rows", "error",
         gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows)),
        ("text not null", f"'{text}' must not be null", "error", gxe.ExpectColumnValuesToNotBeNull(column=text)),
        ("label not null", f"'{label}' must not be null", "error", gxe.ExpectColumnValuesToNotBeNull(column=label)),
        ("text not blank", f"'{text}' must contain more than whitespace", "error",
         gxe.ExpectColumnValuesToNotMatchRegex(column=text, regex=r"^\s*$")),
        ("text length", f"'{text}' must be {v.min_text_chars}..{v.max_text_chars} characters", "error",
         gxe.ExpectColumnValueLengthsToBeBetween(column=text, min_value=v.min_text_chars,
                                                 max_value=v.max_text_chars)),
        ("control characters", f"'{text}' must not hold control characters or U+FFFD (broken encoding)", "error",
         gxe.ExpectColumnValuesToNotMatchRegex(column=text, regex=CONTROL_CHARS)),
        ("duplicate texts", f"'{text}' values should be unique (policy: {v.duplicates})",
         "error" if v.duplicates == "fail" else "warning", gxe.ExpectColumnValuesToBeUnique(column=text)),
    ]
    if v.allowed_labels is not None:
        suite.append(("labels allowed", f"'{label}' must be one of the {len(v.allowed_labels)} allowed labels",
                      "error", gxe.ExpectColumnValuesToBeInSet(column=label, value_set=v.allowed_labels)))
    return suite


def _token_report(texts: pd.Series, cfg: TuneopsConfig) -> Check:
    """How many rows the tokenizer would truncate at model.max_length (on a sample of large data)."""
    measured = token_lengths(texts, cfg.model.base, "token length")
    if isinstance(measured, Check):
        return measured
    sample, lengths, sampled = measured
    over = lengths[lengths > cfg.model.max_length]
    share = len(over) / max(len(lengths), 1)
    scope = f"a sample of {len(sample)} rows" if sampled else f"all {len(sample)} rows"
    detail = (f"{share:.2%} of {scope} exceed model.max_length={cfg.model.max_length} tokens and will be "
              f"truncated; longest {int(lengths.max())}, median {int(lengths.median())}")
    return Check("token length", True, len(over), masked_examples(sample.loc[over.index]), detail, "info")


def _pandas_checks(frame: pd.DataFrame, cfg: TuneopsConfig) -> list[Check]:
    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    checks = []
    counts = frame[label].dropna().value_counts()
    small = counts[counts < v.min_rows_per_class]
    checks.append(Check("rows per class", small.empty, int(small.sum()),
                        [f"{k!r}: {n} rows" for k, n in small.head(EXAMPLES).items()],
                        f"every label needs at least {v.min_rows_per_class} rows"
                        + (f"; {len(small)} labels have fewer" if len(small) else ""),
                        fix="set validation.rare_classes: drop to remove the rows of those labels before the split "
                        "(the model will not know them)" if v.rare_classes == "fail" else ""))
    checks.append(Check("at least two classes", len(counts) >= 2, 0, [],
                        f"found {len(counts)} distinct label(s); a classifier needs two or more"))
    if len(counts) >= 2:
        ratio = counts.iloc[0] / counts.iloc[-1]
        ok = ratio <= v.max_class_imbalance
        checks.append(Check("class imbalance", ok, 0,
                            [] if ok else [f"{counts.index[0]!r}: {counts.iloc[0]} rows vs {counts.index[-1]!r}: "
                                           f"{counts.iloc[-1]} rows"],
                            f"most/least frequent label ratio is {ratio:.1f}; the limit is {v.max_class_imbalance:g}"))

    if v.conflicting_labels in ("fail", "warn"):  # drop / majority resolved them before (apply_policies)
        conflicts = _conflicts(frame, text, label)
        found = len(conflicts.texts)
        strict = v.conflicting_labels == "fail"
        checks.append(Check("conflicting labels", found == 0, int(conflicts.rows.sum()), conflicts.examples,
                            "the same (normalised) text must not carry different labels"
                            + ("" if strict else " (policy warn, validation.conflicting_labels: kept and trained on)")
                            + (f"; {found} texts do" if found else ""), "error" if strict else "warning",
                            fix="set validation.conflicting_labels: drop (remove their rows), majority (keep each "
                            "text's most frequent label) or warn (train on them all)" if strict else ""))

    kinds = pii.scan(frame[text])
    flagged = kinds[kinds != ""]
    severity: Severity = "error" if v.pii_policy == "fail" else "warning"
    action = {"fail": "remove it from the data or set validation.pii_policy: redact",
              "redact": "it is masked before training", "warn": "it is kept in the training data"}[v.pii_policy]
    found = ", ".join(f"{k}: {n}" for k, n in flagged.str.split(",").explode().value_counts().items())
    checks.append(Check("personal data", flagged.empty, len(flagged), masked_examples(frame.loc[flagged.index, text]),
                        f"texts must not hold e-mail addresses, phone numbers, IBANs or card numbers "
                        f"(policy: {v.pii_policy}; {action})" + (f"; found {found}" if found else ""), severity))
    checks.append(_token_report(frame[text], cfg))
    return checks


def validate_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Run every check of the contract on a dataset (plain function; the task wraps it)."""
    d = cfg.data
    required = [c for c in (d.text_column, d.label_column, d.id_column, d.group_column, d.timestamp_column,
                            *cfg.gate.slice_columns) if c]
    checks = required_columns(df, required, "data.text_column / data.label_column")
    if not all(c.passed for c in checks):
        return ValidationReport(len(df), checks)

    text, label = d.text_column, d.label_column
    wrong_type = df[text].map(lambda x: not isinstance(x, str) and not pd.isna(x))
    checks.append(Check("text type", not wrong_type.any(), int(wrong_type.sum()),
                        masked_examples(df.loc[wrong_type, text]), f"'{text}' must hold strings"))
    if d.timestamp_column:
        stamps = pd.to_datetime(df[d.timestamp_column], errors="coerce", utc=True)
        bad = stamps.isna()
        checks.append(Check("timestamps", not bad.any(), int(bad.sum()),
                            masked_examples(df.loc[bad, d.timestamp_column]),
                            f"'{d.timestamp_column}' must hold parseable dates"))
    kept, decisions = apply_policies(df, cfg)
    frame = kept[[text, label]].copy()
    frame[text] = frame[text].where(frame[text].isna(), frame[text].astype(str))
    frame[label] = frame[label].where(frame[label].isna(), frame[label].astype(str))
    gx_checks, docs = run_gx(frame, _gx_suite(cfg), docs_dir)
    if cfg.validation.invalid_texts == "fail":
        for check in gx_checks:
            if check.name in ("text not null", "text not blank", "text length"):
                check.fix = "set validation.invalid_texts: drop to remove such rows before the split"
    contract = _pandas_checks(frame, cfg)
    policies = {d.policy: d.record for d in decisions}
    if cfg.validation.conflicting_labels == "warn":  # kept and trained on: recorded like a decision
        found = next(c for c in contract if c.name == "conflicting labels")
        policies["conflicting_labels"] = f"warn: {found.failing_rows} rows kept"
    return ValidationReport(len(df), checks + [d.check for d in decisions] + gx_checks + contract, docs,
                            kept_rows=len(kept), policies=policies)


# ----------------------------------------------------------------------------- data policies


@dataclass(frozen=True)
class _Conflicts:
    texts: pd.Index
    """The normalised texts that carry more than one label."""
    rows: pd.Series
    """Per row of the frame: whether its text is one of them."""
    norm: pd.Series
    examples: list[str]


def _conflicts(frame: pd.DataFrame, text: str, label: str) -> _Conflicts:
    """Texts equal after normalisation that carry different labels (rows with a null text or label never do)."""
    valid = frame[text].notna() & frame[label].notna()
    norm = normalise(frame.loc[valid, text]).reindex(frame.index)
    labels = frame[label].astype(str)
    per_text = labels[valid].groupby(norm[valid].to_numpy()).nunique()
    texts = per_text.index[per_text > 1]
    rows = valid & norm.isin(texts)
    examples = []
    for key in texts[:EXAMPLES]:
        mine = rows & (norm == key)
        counts = labels[mine].value_counts()
        shown = ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
        examples.append(f"{show(str(frame.loc[mine, text].iloc[0]))} labelled {shown}")
    return _Conflicts(texts, rows, norm, examples)


@dataclass(frozen=True)
class PolicyDecision:
    """What one data policy did to the rows: the report's line and the record kept with the run and version."""

    policy: str
    """The validation field (conflicting_labels, invalid_texts, rare_classes)."""
    removed: pd.Series
    """Per row of the input: whether this policy removed it."""
    check: Check
    record: str
    """e.g. 'drop: 171 rows removed (47 texts)'; tag tuneops.data_policy.<policy>."""


def _decision(policy: str, setting: str, removed: pd.Series, examples: list[str], detail: str,
              summary: str) -> PolicyDecision:
    n = int(removed.sum())
    check = Check(policy.replace("_", " "), n == 0, n, examples,
                  f"policy {setting} (validation.{policy}): {detail if n else 'nothing to remove'}", "warning")
    return PolicyDecision(policy, removed, check, f"{setting}: {n} rows removed" + (f" ({summary})" if n else ""))


def _invalid_texts(df: pd.DataFrame, cfg: TuneopsConfig) -> PolicyDecision:
    text, v = cfg.data.text_column, cfg.validation
    null = df[text].isna()
    values = df[text].where(null, df[text].astype(str)).fillna("")
    blank = ~null & values.str.fullmatch(r"\s*")
    lengths = values.str.len()
    short = ~null & ~blank & (lengths < v.min_text_chars)
    long = ~null & (lengths > v.max_text_chars)
    removed = null | blank | short | long
    parts = {"null": null, "blank": blank, f"shorter than {v.min_text_chars} characters": short,
             f"longer than {v.max_text_chars} characters": long}
    summary = ", ".join(f"{int(m.sum())} {k}" for k, m in parts.items() if m.any())
    return _decision("invalid_texts", "drop", removed, masked_examples(df.loc[removed, text]),
                     f"{int(removed.sum())} rows whose text is {summary} were removed before the split", summary)


def _resolve_conflicts(df: pd.DataFrame, cfg: TuneopsConfig, keep: pd.Series) -> PolicyDecision:
    text, label, setting = cfg.data.text_column, cfg.data.label_column, cfg.validation.conflicting_labels
    frame = df[keep]
    conflicts = _conflicts(frame, text, label)
    removed = conflicts.rows.copy()
    detail = (f"{len(conflicts.texts)} texts carried different labels; all their {int(removed.sum())} rows were "
              "removed before the split")
    summary = f"{len(conflicts.texts)} texts"
    if setting == "majority" and len(conflicts.texts):
        rows = conflicts.rows
        pairs = pd.DataFrame({"norm": conflicts.norm[rows], "label": frame.loc[rows, label].astype(str)})
        counts = pairs.groupby(["norm", "label"]).size().rename("n").reset_index()
        top = counts.groupby("norm").n.transform("max")
        leaders = counts[counts.n == top]
        tied = leaders.groupby("norm").size()
        tied = tied.index[tied > 1]
        winner = leaders[~leaders.norm.isin(tied)].set_index("norm").label
        kept = rows & (pairs.norm.map(winner) == pairs.label).reindex(frame.index, fill_value=False)
        removed = rows & ~kept
        tie_rows = int(pairs.norm.isin(tied).sum())
        detail = (f"{len(conflicts.texts) - len(tied)} of {len(conflicts.texts)} texts with different labels keep "
                  f"the rows of their most frequent label ({int(kept.sum())} rows kept, "
                  f"{int(removed.sum()) - tie_rows} rows with another label removed); {len(tied)} ties (no single "
                  f"most frequent label) lost all their {tie_rows} rows; before the split")
        summary = f"{len(conflicts.texts)} texts, {len(tied)} ties"
        examples = [f"{e} -> {'tie, removed' if key in tied else 'kept ' + repr(winner[key])}"
                    for e, key in zip(conflicts.examples, conflicts.texts, strict=False)]
    else:
        examples = conflicts.examples
    return _decision("conflicting_labels", setting, removed.reindex(df.index, fill_value=False), examples, detail,
                     summary)


def _rare_classes(df: pd.DataFrame, cfg: TuneopsConfig, keep: pd.Series) -> PolicyDecision:
    label, v = cfg.data.label_column, cfg.validation
    labels = df[label].where(df[label].isna(), df[label].astype(str))
    counts = labels[keep].dropna().value_counts()
    small = counts[counts < v.min_rows_per_class]
    removed = keep & labels.isin(small.index)
    return _decision("rare_classes", "drop", removed, [f"{k!r}: {n} rows" for k, n in small.head(EXAMPLES).items()],
                     f"{len(small)} labels had fewer than {v.min_rows_per_class} rows (validation.min_rows_per_class); "
                     f"their {int(removed.sum())} rows were removed before the split, so the model does not know "
                     "these labels", f"{len(small)} labels")


def apply_policies(df: pd.DataFrame, cfg: TuneopsConfig) -> tuple[pd.DataFrame, list[PolicyDecision]]:
    """The rows that the data policies keep, and what each policy that is not 'fail' did.

    In order: validation.invalid_texts (null, blank, too short or too long texts), conflicting_labels (drop or
    majority), rare_classes (counted on the rows the first two kept). The same data and settings always keep the
    same rows, so validation (which reports it) and preparation (which applies it) agree; the hash-keyed split of
    a kept row does not depend on the rows removed (the text, id or group keys it).
    """
    v = cfg.validation
    keep = pd.Series(True, index=df.index)
    decisions = []
    if v.invalid_texts == "drop":
        decisions.append(_invalid_texts(df, cfg))
        keep &= ~decisions[-1].removed
    if v.conflicting_labels in ("drop", "majority"):
        decisions.append(_resolve_conflicts(df, cfg, keep))
        keep &= ~decisions[-1].removed
    if v.rare_classes == "drop":
        decisions.append(_rare_classes(df, cfg, keep))
        keep &= ~decisions[-1].removed
    return (df if keep.all() else df[keep]), decisions


def prepare(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """The validated rows as training reads them: the data policies applied, personal data masked (pii redact)."""
    kept, _ = apply_policies(df, cfg)
    return redact(kept, cfg) if cfg.validation.pii_policy == "redact" else kept


def redact(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """Mask personal data in the text column (validation.pii_policy: redact)."""
    text = cfg.data.text_column
    kinds = pii.scan(df[text])
    flagged = kinds != ""
    if not flagged.any():
        return df
    df = df.copy()
    df.loc[flagged, text] = df.loc[flagged, text].map(pii.mask)
    return df


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
    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.engine import TrainingError

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
    from tuneops.families.classification.pooling import classifier_class
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

    return TrainingPlan(
        tokenizer=tokenizer, load_base=load_base, train_dataset=encode(frames["train"]),
        eval_dataset=encode(frames["validation"]), collator=DataCollatorWithPadding(tokenizer),
        metric=cfg.gate.primary_metric, compute_metrics=compute_metrics, best_validation=best_validation,
        verify_export=lambda model_dir, best: verify_export(model_dir, frames["validation"], cfg, best),
        labels=labels)


# ----------------------------------------------------------------------------- evaluation


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


# ----------------------------------------------------------------------------- baseline

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


# ----------------------------------------------------------------------------- registration


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
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Knows only the labels above; every input gets one of them, however unrelated (watch confidence and "
        "drift).",
        f"- Texts longer than {cfg.model.max_length} tokens are truncated.",
        "- Quality was measured on held-out rows of the same source; other channels or periods may differ.",
    ])


def pyfunc() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The pyfunc (label and confidence per text), an input example and an output example (the signature)."""
    import pandas as pd

    from tuneops.families.classification.pyfunc import TextClassifierModel

    return (TextClassifierModel(), pd.DataFrame({"text": ["I still have not received my new card"]}),
            pd.DataFrame({"label": ["card_arrival"], "confidence": [0.9]}))


# ----------------------------------------------------------------------------- config


def accepts(config: dict[str, Any]) -> str | None:
    """Any transformers model with a model_type gets a sequence-classification head."""
    return None if config.get("model_type") else "its config.json names no model_type; save it with save_pretrained"


def config_problems(cfg: TuneopsConfig) -> list[str]:
    """Settings of other families that a classifier config must not carry."""
    d = cfg.data
    given = [f"data.{k}" for k in ("prompt_column", "response_column", "messages_column", "chosen_column",
                                   "rejected_column") if getattr(d, k)]
    given += [f"gate.also_compare {k}" for k in cfg.gate.also_compare if k not in ("accuracy", "macro_f1")]
    if cfg.gate.max_perplexity is not None:
        given.append("gate.max_perplexity")
    given += [f"model.{k}" for k in ("system_prompt", "stop_strings") if getattr(cfg.model, k)]
    if cfg.model.response_format != "text":
        given.append("model.response_format")
    if given:
        return [f"{', '.join(given)} set but model.task is 'classification'; set model.task: causal_lm or remove "
                "them"]
    return []


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


register(TaskFamily(
    name="classification",
    summary="text -> label, a sequence classifier",
    noun="classifier",
    peft_task_type="SEQ_CLS",
    gate_defaults={"primary_metric": "accuracy", "floors": {"accuracy": 0.0}, "min_lift_over_baseline": 0.0},
    config_problems=config_problems,
    accepts=accepts,
    split_data=lambda cfg: cfg.data,
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
    # Measured on three datasets nobody tuned tuneops for (README, "Defaults that work on new data"): full
    # fine-tuning of a small encoder beats LoRA there and is faster on CPU; early stopping bounds the epochs.
    training_defaults={
        "*": {"method": "full", "epochs": 10, "early_stopping_patience": 2, "label_smoothing": 0.1},
        "full": {"learning_rate": 1e-4, "head_learning_rate": 3e-3, "layer_lr_decay": 0.9, "weight_decay": 0.01},
        "lora": {"learning_rate": 2e-3},
    },
))
