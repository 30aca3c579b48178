"""Evaluation tasks: the challenger on the test split, the champion re-scored on the same rows, the report.

What a family scores and how it reports it is the family's (tuneops/families/); these tasks record
the results on the MLflow run and as Prefect artifacts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops import families
from tuneops.config import TuneopsConfig
from tuneops.data.splits import SplitResult
from tuneops.evaluation.champion import rescore_champion
from tuneops.evaluation.results import ChampionScores, Evaluation


@task(name="evaluate-challenger", cache_policy=NO_CACHE)
def evaluate_challenger(model_dir: str, test_path: str, cfg: TuneopsConfig, out_dir: Path,
                        run_id: str) -> Evaluation:
    """The family's metrics on the test split (classification: accuracy, macro-F1, per class, calibration;
    causal_lm: ROUGE-L, exact match, perplexity), logged with the report files."""
    from tuneops.registry import tracking

    evaluation = families.of(cfg).evaluate(model_dir, pd.read_parquet(test_path), cfg, out_dir)
    tracking.log_metrics(run_id, {f"test_{k}": v for k, v in evaluation.metrics.items()})
    if evaluation.report_dir:
        tracking.log_artifacts(run_id, evaluation.report_dir, "evaluation")
    if evaluation.detail_metrics:
        tracking.log_metrics(run_id, evaluation.detail_metrics)
    return evaluation


@task(name="score-baseline", cache_policy=NO_CACHE)
def score_baseline(test_path: str, splits: SplitResult, cfg: TuneopsConfig, out_dir: Path,
                   run_id: str) -> Evaluation | None:
    """The family's baseline on the same test rows (causal_lm: the zero-shot base model); None when it has none."""
    from tuneops.registry import tracking

    family = families.of(cfg)
    if family.baseline is None:
        return None
    evaluation = family.baseline(pd.read_parquet(test_path), splits, cfg, out_dir)
    tracking.log_metrics(run_id, {f"baseline_test_{k}": v for k, v in evaluation.metrics.items()})
    tracking.set_tags(run_id, {"tuneops.baseline": evaluation.name})
    tracking.client().log_artifact(run_id, evaluation.predictions_path, "evaluation")
    return evaluation


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def score_champion(model_dir: str, test_path: str, test_fingerprint: str, cfg: TuneopsConfig, out_dir: Path,
                   run_id: str) -> ChampionScores | None:
    """Re-score the champion on *this* run's test split (and both models on its previous one).

    Comparing with the champion's own recorded metrics would compare different test sets.
    """
    family = families.of(cfg)
    return rescore_champion(cfg, test_path, test_fingerprint, out_dir, run_id, family.registered,
                            lambda: family.challenger(model_dir, cfg), family.score)


def publish(markdown: str, run_id: str, description: str, files: tuple[str, ...] = ()) -> str:
    """The evaluation report as an MLflow artifact (with ``files`` beside it) and a Prefect markdown artifact."""
    from tuneops.registry import tracking

    tracking.log_text(run_id, markdown, "evaluation/report.md")
    for path in files:
        tracking.client().log_artifact(run_id, path, "evaluation")
    create_markdown_artifact(markdown, key="evaluation-report", description=description)
    return markdown


@task(name="publish-report")
def publish_report(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str, run_id: str,
                   baseline: Evaluation | None = None) -> str:
    """Publish the family's evaluation report with the gate's reasoning (and the baseline's answers beside)."""
    family = families.of(cfg)
    return publish(family.report_markdown(cfg, challenger, decision_md, baseline), run_id,
                   f"Test metrics of the {family.noun} and gate reasoning", family.report_attachments(challenger))
