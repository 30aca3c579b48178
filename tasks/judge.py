"""Steps every candidate model goes through after it exists: test evaluation, champion re-scoring, the gate,
the report, registration, and the run's summary. train_model and combine_adapters both end here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tuneops.config import TuneopsConfig
from tuneops.data.rows import fingerprint
from tuneops.data.splits import SplitResult
from tuneops.evaluation.gate import GateDecision
from tuneops.evaluation.results import ChampionScores, Evaluation
from tuneops.registry import tracking
from tuneops.registry.versions import Registration
from tuneops.tasks.evaluate import evaluate_challenger, publish_report, score_baseline, score_champion
from tuneops.tasks.gate import gate
from tuneops.tasks.register import register_model
from tuneops.training.merge_check import MergeCheck
from tuneops.training.trainer import TrainResult


@dataclass
class TrainOutcome:
    """What a training run produced: the version, whether it was promoted and why, and timings."""

    registration: Registration
    decision: GateDecision
    test_metrics: dict[str, float]
    run_id: str
    compute_seconds: dict[str, float]
    merge_check: dict[str, str] = field(default_factory=dict)
    """The merged-vs-unmerged check's tags (``tuneops.merge_check.*``), empty where it does not apply."""


def compute_seconds(trained: TrainResult, challenger: Evaluation, champion: ChampionScores | None) -> dict[str, float]:
    """Seconds spent in model compute (training loop and evaluations), for the overhead benchmark."""
    rescoring = 0.0
    if champion is not None:
        rescoring = sum(e.metrics["seconds"] for e in (champion.current, champion.champion_previous,
                                                        champion.challenger_previous) if e is not None)
    return {"train": trained.train_seconds, "validation": trained.eval_seconds,
            "test": challenger.metrics["seconds"], "champion_rescore": rescoring}


@task(name="record-config")
def record_config(cfg: TuneopsConfig, run_id: str) -> None:
    """Log the resolved config as run params and the code version as a tag."""
    tracking.log_params(run_id, cfg.model_dump(mode="json"))
    tracking.set_tags(run_id, {"tuneops.code_version": tracking.code_version(),
                               "tuneops.config_hash": cfg.fingerprint()})


@task(name="report-outcome")
def report_outcome(outcome: TrainOutcome) -> None:
    """Leave a one-screen summary as a Prefect artifact and in the run log."""
    r, d = outcome.registration, outcome.decision
    lines = [f"# {r.name} v{r.version}", "",
             f"**{'Promoted to champion' if r.promoted else 'Not promoted'}**: {d.reason}", "",
             "| test metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in outcome.test_metrics.items()]
    check = MergeCheck.from_tags(outcome.merge_check)
    if check is not None:
        lines += ["", f"Merged vs unmerged on the validation split: {check.verdict()}."]
    lines += ["", f"Model URI: `{r.model_uri}`; MLflow run `{outcome.run_id}`."]
    create_markdown_artifact("\n".join(lines), key="training-outcome", description="Gate decision and metrics")
    tracking.log_metrics(outcome.run_id, {f"compute_{k}_seconds": v for k, v in outcome.compute_seconds.items()})
    get_run_logger().info("%s v%s: %s", r.name, r.version, d.reason)


def judge_and_register(config: TuneopsConfig, data: pd.DataFrame, splits: SplitResult, trained: TrainResult,
                       work: Path, run_id: str) -> TrainOutcome:
    """Test evaluation, champion re-scoring, gate, report and registration, for any candidate model."""
    columns = config.split_data()
    test = splits.paths["test"]
    challenger = evaluate_challenger(trained.model_dir, test, config, work / "evaluation", run_id)
    champion = score_champion(trained.model_dir, test, splits.fingerprints["test"], config, work / "evaluation",
                              run_id)
    baseline = score_baseline(test, splits, config, work / "evaluation", run_id)
    decision = gate(challenger, champion, config.gate, run_id, baseline)
    publish_report(config, challenger, decision.to_markdown(), run_id, baseline)
    data_fingerprint = fingerprint(data, [columns.text_column, columns.label_column])
    registration = register_model(trained, config, data_fingerprint, splits, challenger.metrics, decision, run_id)
    return TrainOutcome(registration, decision, challenger.metrics, run_id,
                        compute_seconds(trained, challenger, champion), trained.merge_check)
