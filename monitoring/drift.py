"""The drift check: one Evidently 0.7 report over every signal, reduced to scores and verdicts.

``check_drift(reference, current, settings, tokenizer_base)`` is the one code path that the
`tuneops monitor` command and the ``monitor_production`` flow share. Both frames carry ``text``,
``label`` (predicted) and ``confidence``; signals are:

- ``text``: Evidently's domain classifier on the raw text (ROC AUC, ``abs_text_content_drift``);
- ``length``, ``word_count``, ``non_letter_share``, ``unknown_token_share``: descriptors
  (:mod:`monitoring.signals`) compared with the normed Wasserstein distance;
- ``prediction``: predicted-label distribution, Jensen-Shannon distance;
- ``confidence``: normed Wasserstein distance;
- ``embedding``: a classifier on sampled MiniLM embeddings (ROC AUC, Evidently's ``ModelDriftMethod``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.signals import DESCRIPTORS, describe, embed
from tuneops.config import MonitoringConfig
from tuneops.errors import DataError

REQUIRED = ("text", "label", "confidence")
# signal -> (column compared, Evidently method)
METHODS: dict[str, tuple[str, str]] = {
    "text": ("text", "abs_text_content_drift"),
    **{d: (d, "wasserstein") for d in DESCRIPTORS},
    "prediction": ("label", "jensenshannon"),
    "confidence": ("confidence", "wasserstein"),
}


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


def check_columns(frame: pd.DataFrame, source: str) -> None:
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (has {list(frame.columns)}); monitoring "
                        "reads the prediction log written by score_batch / `tuneops predict` (text, label, "
                        "confidence, ...)")


def _prepare(frame: pd.DataFrame, tokenizer_base: str) -> pd.DataFrame:
    out = pd.DataFrame({"text": frame["text"].fillna("").astype(str).to_numpy(),
                        "label": frame["label"].astype(str).to_numpy(),
                        "confidence": pd.to_numeric(frame["confidence"], errors="coerce").to_numpy()})
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


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig, tokenizer_base: str,
                report_file: str | Path | None = None) -> DriftResult:
    """Compare ``current`` production rows with the ``reference`` rows on every signal; save the HTML report."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    check_columns(reference, "reference data")
    check_columns(current, "prediction log")
    if len(current) < cfg.min_rows:
        raise DataError(f"the window holds {len(current)} predictions, fewer than monitoring.min_rows "
                        f"({cfg.min_rows}); widen the window or lower min_rows")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ref, cur = _prepare(reference, tokenizer_base), _prepare(current, tokenizer_base)
    seconds["descriptors"] = time.perf_counter() - t0
    thresholds = cfg.thresholds.model_dump()
    definition = DataDefinition(text_columns=["text"], categorical_columns=["label"],
                                numerical_columns=["confidence", *DESCRIPTORS])
    metrics: list[Any] = [ValueDrift(column=col, method=method, threshold=thresholds[name])
                          for name, (col, method) in METHODS.items()]
    names = list(METHODS)
    t0 = time.perf_counter()
    snap = Report(metrics).run(Dataset.from_pandas(cur, data_definition=definition),
                               Dataset.from_pandas(ref, data_definition=definition))
    seconds["report"] = time.perf_counter() - t0
    scores = {name: _value(snap.dict(), i) for i, name in enumerate(names)}
    if cfg.embedding_sample:
        t0 = time.perf_counter()
        ref_e, cur_e = _embedding_frames(ref, cur, cfg)
        seconds["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # Evidently's classifier method itself: its Report wrapper spends about a minute rendering
        # 384 embedding columns, the method takes a fraction of a second.
        scores["embedding"] = float(ModelDriftMethod(threshold=cfg.thresholds.embedding)(cur_e, ref_e)[0])
        seconds["embedding_drift"] = time.perf_counter() - t0
    signals = {k: Signal(round(v, 6), thresholds[k], bool(v > thresholds[k])) for k, v in scores.items()}
    result = DriftResult(signals, len(cur), len(ref), seconds=seconds)
    if report_file is not None:
        t0 = time.perf_counter()
        result.report = str(save_html(snap, result, Path(report_file)))
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
