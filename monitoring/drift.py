"""The drift check: one Evidently 0.7 report over every signal, reduced to scores and verdicts.

``check_drift(reference, current, settings, tokenizer_base, comparisons)`` is the one code path that
the `tuneops monitor` command and the ``monitor_production`` flow share. Both frames carry the model's
input as ``text`` (a classifier's text, a generator's prompt). Input signals, the same for every task
family:

- ``text``: Evidently's domain classifier on the raw text (ROC AUC, ``abs_text_content_drift``); for
  every signal's threshold is raised to the chance level of small samples (the ``*_noise_floor``
  functions), so the configured thresholds govern large windows and small ones do not alarm on noise;
- ``length``, ``word_count``, ``non_letter_share``, ``unknown_token_share``: descriptors
  (:mod:`monitoring.signals`) compared with the normed Wasserstein distance;
- ``embedding``: a classifier on sampled MiniLM embeddings (ROC AUC, Evidently's ``ModelDriftMethod``).

Output signals come from the task family (``TaskFamily.prediction_drift``) as
:class:`tuneops.families.Comparison` s: a classifier's predicted-label distribution (Jensen-Shannon)
and confidence (normed Wasserstein); a generator's response lengths, empty and cut-off answers, JSON
validity and extracted labels. Each comparison is one Evidently report.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.config import MonitoringConfig
from tuneops.errors import DataError
from tuneops.families import Comparison, require_log_columns
from tuneops.monitoring.signals import DESCRIPTORS, describe, embed

# signal -> (column compared, Evidently method)
TEXT_METHODS: dict[str, tuple[str, str]] = {
    "text": ("text", "abs_text_content_drift"),
    **{d: (d, "wasserstein") for d in DESCRIPTORS},
}
AUC_SIGNALS = ("text", "embedding")
Z_NULL = 3.09  # one-sided 99.9% quantile of the normal distribution


@dataclass
class Signal:
    """One drift signal: its score, the threshold it is held to, and whether it crossed it."""

    score: float
    threshold: float
    drift: bool


@dataclass
class DriftResult:
    """The verdict of one check: every signal, row counts, timings, and where the HTML report is."""

    signals: dict[str, Signal]
    current_rows: int
    reference_rows: int
    report: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return any(s.drift for s in self.signals.values())

    @property
    def drifting(self) -> dict[str, Signal]:
        return {k: s for k, s in self.signals.items() if s.drift}

    def summary(self) -> dict[str, Any]:
        """The one-line JSON the CLI prints: drift, every signal's score/threshold/verdict, report path."""
        return {"drift": self.drift, "signals": {k: asdict(v) for k, v in self.signals.items()},
                "report": self.report, "current_rows": self.current_rows, "reference_rows": self.reference_rows}


def _prepare(frame: pd.DataFrame, tokenizer_base: str) -> pd.DataFrame:
    out = pd.DataFrame({"text": frame["text"].fillna("").astype(str).to_numpy()})
    return pd.concat([out, describe(out["text"], tokenizer_base)], axis=1)


def _embedding_frames(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = cfg.embedding_sample
    ref = reference.sample(min(n, len(reference)), random_state=cfg.seed)
    cur = current.sample(min(n, len(current)), random_state=cfg.seed)
    vectors = embed(ref["text"].tolist() + cur["text"].tolist(), cfg.embedding_model)
    cols = [f"emb_{i}" for i in range(vectors.shape[1])]
    return (pd.DataFrame(vectors[:len(ref)], columns=cols), pd.DataFrame(vectors[len(ref):], columns=cols))


def _value(snapshot_dict: dict[str, Any], index: int) -> float:
    value = snapshot_dict["metrics"][index]["value"]
    return float(value if not isinstance(value, dict) else next(iter(value.values())))


def auc_noise_floor(n_reference: int, n_current: int) -> float:
    """The AUC a domain classifier reaches by chance 0.1% of the time on a 50% test half of this many rows.

    Under no drift the AUC on the test half is a Mann-Whitney statistic with variance
    (n1 + n2 + 1) / (12 n1 n2); a configured AUC threshold below this floor would alarm on noise
    for small windows, so the effective threshold is the larger of the two.
    """
    n1, n2 = max(n_reference // 2, 1), max(n_current // 2, 1)
    return 0.5 + Z_NULL * ((n1 + n2 + 1) / (12 * n1 * n2)) ** 0.5


def distance_noise_floor(n_reference: int, n_current: int) -> float:
    """A normed Wasserstein distance that two samples of the same distribution rarely exceed.

    Its sampling noise shrinks like sqrt(1/n + 1/m); 3x that (about 2x the typical no-drift distance
    seen on BANKING77 windows) keeps small windows from alarming on noise. Large windows keep the
    configured threshold.
    """
    return 3.0 * (1 / max(n_reference, 1) + 1 / max(n_current, 1)) ** 0.5


def label_noise_floor(n_reference: int, n_current: int, classes: int) -> float:
    """The Jensen-Shannon distance two samples of one K-class distribution rarely exceed (1.5x its expectation).

    The JS divergence of two multinomial samples is about (K-1)(1/n + 1/m) / (8 ln 2) under no drift.
    """
    import math

    return 1.5 * math.sqrt(max(classes - 1, 1) * (1 / max(n_reference, 1) + 1 / max(n_current, 1))
                           / (8 * math.log(2)))


def _run_report(metrics: dict[str, tuple[str, str]], thresholds: dict[str, float], reference: pd.DataFrame,
                current: pd.DataFrame, definition: Any) -> tuple[Any, dict[str, float]]:
    from evidently import Dataset, Report
    from evidently.metrics import ValueDrift

    snap = Report([ValueDrift(column=col, method=method, threshold=thresholds[name])
                   for name, (col, method) in metrics.items()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    values = snap.dict()
    return snap, {name: _value(values, i) for i, name in enumerate(metrics)}


def _compare(comparison: Comparison, thresholds: dict[str, float]) -> tuple[Any, dict[str, float], dict[str, float]]:
    """One family comparison as an Evidently report: scores, and thresholds raised to the sample's noise floor."""
    from evidently import DataDefinition

    columns = {col: method for col, method in comparison.methods.values()}
    ref, cur = comparison.reference[list(columns)], comparison.current[list(columns)]
    definition = DataDefinition(categorical_columns=[c for c, m in columns.items() if m == "jensenshannon"],
                                numerical_columns=[c for c, m in columns.items() if m != "jensenshannon"])
    snap, scores = _run_report(comparison.methods, thresholds, ref, cur, definition)
    effective = {}
    for name, (col, method) in comparison.methods.items():
        floor = (label_noise_floor(len(ref), len(cur), len(set(ref[col].astype(str)) | set(cur[col].astype(str))))
                 if method == "jensenshannon" else distance_noise_floor(len(ref), len(cur)))
        effective[name] = max(thresholds[name], floor)
    return snap, scores, effective


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig, tokenizer_base: str,
                comparisons: list[Comparison], report_file: str | Path | None = None) -> DriftResult:
    """Compare ``current`` production rows with the reference on every signal; save the HTML report.

    ``reference`` supplies the input texts (training data); ``comparisons`` the output-side signals,
    whose reference should come from rows the model did not train on, since a model is more
    confident on its own training rows than on any new traffic.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition
    from evidently.metrics.embeddings import ModelDriftMethod

    require_log_columns(reference, "reference data", ("text",))
    require_log_columns(current, "prediction log", ("text",))
    if len(current) < cfg.min_rows:
        raise DataError(f"the window holds {len(current)} predictions, fewer than monitoring.min_rows "
                        f"({cfg.min_rows}); widen the window or lower min_rows")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ref, cur = _prepare(reference, tokenizer_base), _prepare(current, tokenizer_base)
    seconds["descriptors"] = time.perf_counter() - t0
    thresholds = cfg.thresholds.model_dump()
    t0 = time.perf_counter()
    text_snap, scores = _run_report(TEXT_METHODS, thresholds, ref, cur, DataDefinition(
        text_columns=["text"], numerical_columns=list(DESCRIPTORS)))
    seconds["text_report"] = time.perf_counter() - t0
    effective = dict(thresholds)
    effective["text"] = max(thresholds["text"], auc_noise_floor(len(ref), len(cur)))
    for name in DESCRIPTORS:
        effective[name] = max(thresholds[name], distance_noise_floor(len(ref), len(cur)))
    t0 = time.perf_counter()
    output_snaps = []
    for comparison in comparisons:
        snap, found, floors = _compare(comparison, thresholds)
        output_snaps.append(snap)
        scores |= found
        effective |= floors
    seconds["prediction_report"] = time.perf_counter() - t0
    if cfg.embedding_sample:
        t0 = time.perf_counter()
        ref_e, cur_e = _embedding_frames(ref, cur, cfg)
        seconds["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # Evidently's classifier method itself: its Report wrapper spends about a minute rendering
        # 384 embedding columns, the method takes a fraction of a second.
        scores["embedding"] = float(ModelDriftMethod(threshold=cfg.thresholds.embedding)(cur_e, ref_e)[0])
        effective["embedding"] = max(thresholds["embedding"], auc_noise_floor(len(ref_e), len(cur_e)))
        seconds["embedding_drift"] = time.perf_counter() - t0
    signals = {k: Signal(round(v, 6), round(effective[k], 6), bool(v > effective[k])) for k, v in scores.items()}
    result = DriftResult(signals, len(cur), len(ref), seconds=seconds)
    if report_file is not None:
        t0 = time.perf_counter()
        result.report = str(save_html(text_snap, result, Path(report_file)))
        for i, snap in enumerate(output_snaps):
            suffix = "predictions" if i == 0 else f"predictions-{i + 1}"
            snap.save_html(str(Path(report_file).with_name(f"{Path(report_file).stem}-{suffix}.html")))
        seconds["html"] = time.perf_counter() - t0
    return result


def save_html(snapshot: Any, result: DriftResult, path: Path) -> Path:
    """Evidently's HTML report, headed by a verdict table of every signal (embedding drift included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    rows = "".join(f"<tr><td>{k}</td><td>{s.score:.4f}</td><td>{s.threshold:g}</td>"
                   f"<td>{'DRIFT' if s.drift else 'ok'}</td></tr>" for k, s in result.signals.items())
    head = (f"<div style='font-family:sans-serif;margin:1em'><h2>tuneops drift check: "
            f"{'DRIFT' if result.drift else 'no drift'}</h2><p>{result.current_rows} production rows vs "
            f"{result.reference_rows} reference rows</p><table border='1' cellpadding='4'><tr><th>signal</th>"
            f"<th>score</th><th>threshold</th><th>verdict</th></tr>{rows}</table></div>")
    html = path.read_text()
    at = html.find("<body>")
    path.write_text(html[:at + 6] + head + html[at + 6:] if at >= 0 else head + html)
    return path
