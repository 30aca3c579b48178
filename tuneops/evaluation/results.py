"""What an evaluation produced: metrics, and where the per-example predictions the gate pairs are kept.

How a family predicts and scores lives in its module (tuneops/families/); re-scoring the champion on
the same rows is :mod:`tuneops.evaluation.champion`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Evaluation:
    """Metrics of one model on one labelled split, and where its per-example predictions are.

    ``detail_metrics`` (e.g. per-class F1) and ``report_dir`` (report files) are logged with the run.
    """

    metrics: dict[str, float]
    predictions_path: str
    detail_metrics: dict[str, float] = field(default_factory=dict)
    report_dir: str | None = None
    name: str = "challenger"
    """Which model was scored (a baseline says what it is, e.g. 'zero-shot base model')."""


@dataclass
class ChampionScores:
    """The champion's version and its scores on the current (and previous) test split."""

    version: str
    current: Evaluation
    champion_previous: Evaluation | None = None
    challenger_previous: Evaluation | None = None


