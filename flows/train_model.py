"""train_model: from a company dataset to a registered, gated model in MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.data import fingerprint, load_dataset
from tasks.evaluate import ChampionScores, Evaluation, evaluate_challenger, publish_report, score_champion
from tasks.finetune import fine_tune
from tasks.gate import GateDecision, gate
from tasks.registry import Registration, register_model
from tasks.split import split_dataset
from tuneops import settings, tracking
from tuneops.config import TuneopsConfig
from tuneops.splits import SplitResult
from tuneops.training import TrainResult


@dataclass
class TrainOutcome:
    """What a training run produced: the version, whether it was promoted and why, and timings."""

    registration: Registration
    decision: GateDecision
    test_metrics: dict[str, float]
    run_id: str
    compute_seconds: dict[str, float]


def compute_seconds(trained: TrainResult, challenger: Evaluation, champion: ChampionScores | None) -> dict[str, float]:
    """Seconds spent in model compute (training loop and evaluations), for the overhead benchmark."""
    rescoring = 0.0
    if champion is not None:
        rescoring = sum(e.metrics["seconds"] for e in (champion.current, champion.champion_previous,
                                                        champion.challenger_previous) if e is not None)
    return {"train": trained.train_seconds, "validation": trained.eval_seconds,
            "test": challenger.metrics["seconds"], "champion_rescore": rescoring}


@dataclass(frozen=True)
class TaskFamily:
    """The four steps that differ between task families; the rest of the flow is shared."""

    fine_tune: Callable
    evaluate_challenger: Callable
    score_champion: Callable
    publish_report: Callable


def task_family(config: TuneopsConfig) -> TaskFamily:
    """Classification (text -> label) or causal_lm (prompt -> generated response), per ``model.task``."""
    if config.model.task == "causal_lm":
        from tasks.evaluate_generation import evaluate_generator, publish_generation_report, score_champion_generation
        from tasks.finetune_causal import fine_tune_causal

        return TaskFamily(fine_tune_causal, evaluate_generator, score_champion_generation, publish_generation_report)
    return TaskFamily(fine_tune, evaluate_challenger, score_champion, publish_report)


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
    lines += ["", f"Model URI: `{r.model_uri}`; MLflow run `{outcome.run_id}`."]
    create_markdown_artifact("\n".join(lines), key="training-outcome", description="Gate decision and metrics")
    tracking.log_metrics(outcome.run_id, {f"compute_{k}_seconds": v for k, v in outcome.compute_seconds.items()})
    get_run_logger().info("%s v%s: %s", r.name, r.version, d.reason)


def judge_and_register(config: TuneopsConfig, data: pd.DataFrame, splits: SplitResult, trained: TrainResult,
                       work: Path, run_id: str) -> TrainOutcome:
    """Steps 5-7 for any candidate model: test evaluation, champion re-scoring, gate, report, registration."""
    family, columns = task_family(config), config.split_data()
    test = splits.paths["test"]
    challenger = family.evaluate_challenger(trained.model_dir, test, config, work / "evaluation", run_id)
    champion = family.score_champion(trained.model_dir, test, splits.fingerprints["test"], config,
                                     work / "evaluation", run_id)
    decision = gate(challenger, champion, config.gate, run_id)
    family.publish_report(config, challenger, decision.to_markdown(), run_id)
    data_fingerprint = fingerprint(data, [columns.text_column, columns.label_column])
    registration = register_model(trained, config, data_fingerprint, splits, challenger.metrics, decision, run_id)
    return TrainOutcome(registration, decision, challenger.metrics, run_id,
                        compute_seconds(trained, challenger, champion))


@flow(name="train_model", log_prints=True)
def train_model(config: TuneopsConfig) -> TrainOutcome:
    """Validate the data, split it, fine-tune, evaluate, gate against the champion, register.

    1. load the dataset named in ``config.data``;
    2. validate it with Great Expectations (the flow stops here on bad data: nothing is trained);
    3. split it deterministically into train / validation / test;
    4. fine-tune the base model with the configured method (a classifier, or a causal LM per ``model.task``);
    5. evaluate on the test split (generation: greedy, ROUGE-L / exact match / perplexity), and re-score the
       champion on the same split;
    6. gate: floors, a confidence interval on the difference to the champion, per-class and per-slice
       non-regression, and no forgetting on the champion's own test split; publish the report;
    7. register the version as 'challenger'; move 'champion' if the gate passed.
    """
    from tasks.validation import validate_data

    family = task_family(config)
    columns = config.split_data()  # causal_lm: the prompt keys the split, the response is the target
    with tracking.run(config.registry.experiment, run_name=config.registry.model_name) as run_id:
        record_config(config, run_id)
        data = load_dataset(config.data)
        data = validate_data(data, config, run_id)
        work = settings.runs_dir() / run_id
        splits = split_dataset(data, columns, config.split, work / "splits", run_id)
        trained = family.fine_tune(config, splits, work, run_id)
        outcome = judge_and_register(config, data, splits, trained, work, run_id)
    report_outcome(outcome)
    return outcome
