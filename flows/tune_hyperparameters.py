"""tune_hyperparameters: try configurations on one split, pick the best on validation, write it out.

Every trial is a Prefect task and a nested MLflow run under the search's run. Selection uses the
validation split only; the test split is never scored here, so it stays an honest estimate for the
model that train_model later trains with the best configuration.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from tuneops.tasks.data import load_dataset
from tuneops.tasks.split import split_dataset
from tuneops.tasks.validation import validate_data

from tuneops import families, settings, tracking
from tuneops.config import SearchConfig, TuneopsConfig, apply_overrides, validate_config
from tuneops.errors import ConfigError
from tuneops.splits import SplitResult


@dataclass
class Trial:
    """One configuration tried: its overrides, validation metrics and MLflow run."""

    number: int
    overrides: dict[str, Any]
    validation: dict[str, float]
    run_id: str
    seconds: float


@dataclass
class SearchOutcome:
    """The trials, the best one (on validation), and where its full config was written."""

    trials: list[Trial]
    best: Trial
    best_config_path: str
    run_id: str


def candidates(search: SearchConfig) -> list[dict[str, Any]]:
    """The combinations to try: all of them (grid) or a seeded sample (random)."""
    keys = list(search.space)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*search.space.values())]
    if search.strategy == "random" and search.trials < len(grid):
        grid = random.Random(search.seed).sample(grid, search.trials)
    return grid


def trial_configs(cfg: TuneopsConfig, combos: list[dict[str, Any]]) -> list[TuneopsConfig]:
    """Validate every trial's config before any training: one error lists every bad combination."""
    base = cfg.model_dump(mode="json", exclude={"search"})
    configs, problems = [], []
    for number, combo in enumerate(combos, start=1):
        overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in combo.items()]
        try:
            configs.append(validate_config(apply_overrides(yaml.safe_load(yaml.safe_dump(base)), overrides),
                                           source=f"search trial {number} ({', '.join(overrides)})"))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("the search space produces invalid configs:\n" + "\n".join(problems))
    return configs


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
def run_trial(number: int, cfg: TuneopsConfig, overrides: dict[str, Any], splits: SplitResult,
              parent_run_id: str) -> Trial:
    """Train one configuration and score it on validation, in a nested MLflow run."""
    from tuneops.training import train

    with tracking.run(cfg.registry.experiment, run_name=f"trial-{number}", parent_run_id=parent_run_id,
                      tags={"tuneops.search.trial": str(number)}) as run_id:
        tracking.log_params(run_id, overrides)
        result = train(cfg, splits, settings.runs_dir() / run_id, run_id)
        assert result is not None
        tracking.log_metrics(run_id, {f"best_validation_{k}": v for k, v in result.best_validation.items()})
    return Trial(number, overrides, result.best_validation, run_id, result.train_seconds)


def report(trials: list[Trial], best: Trial, metric: str) -> str:
    keys = list(trials[0].overrides)
    lines = [f"# Hyperparameter search: best trial {best.number}", "",
             f"Selected on validation {metric} (the test split is not used).", "",
             "| trial | " + " | ".join(keys) + f" | validation {metric} | seconds |",
             "|---|" + "---|" * len(keys) + "---|---|"]
    for t in trials:
        mark = " **best**" if t is best else ""
        values = " | ".join(str(t.overrides[k]) for k in keys)
        lines.append(f"| {t.number}{mark} | {values} | {t.validation[metric]:.4f} | {t.seconds:.0f} |")
    return "\n".join(lines)


@flow(name="tune_hyperparameters", log_prints=True)
def tune_hyperparameters(config: TuneopsConfig, output: str | None = None) -> SearchOutcome:
    """Split once, train every trial on it, choose on validation, write the best config as YAML.

    1. build and validate every trial's config (a bad search space fails before any training);
    2. load the dataset and split it exactly as train_model would;
    3. train each trial (a task, and a nested MLflow run under this search's run);
    4. pick the best validation score of the family's search metric (a classifier: the gate's primary
       metric); ties go to the earlier trial;
    5. write the best full config (``output`` or the run's folder) and log it with a report.
    """
    family = families.of(config)
    families.require(config, "tune_hyperparameters", family.search_metric is not None)
    if config.search is None:
        raise ConfigError("the config has no 'search' section; add search.space with the keys and values to try")
    combos = candidates(config.search)
    configs = trial_configs(config, combos)
    metric, higher_is_better = family.search_metric(config)
    with tracking.run(config.registry.experiment, run_name=f"search-{config.registry.model_name}",
                      tags={"tuneops.search": "true"}) as run_id:
        tracking.log_params(run_id, {"search": config.search.model_dump(mode="json")})
        data = validate_data(load_dataset(config.data), config, run_id)
        splits = split_dataset(data, config.split_data(), config.split, settings.runs_dir() / run_id / "splits", run_id)
        trials = [run_trial(n, cfg, combo, splits, run_id)
                  for n, (cfg, combo) in enumerate(zip(configs, combos, strict=True), start=1)]
        sign = 1 if higher_is_better else -1
        best = max(trials, key=lambda t: (sign * t.validation[metric], -t.number))
        best_config = configs[best.number - 1].model_dump(mode="json", exclude={"search"})
        path = Path(output) if output else settings.runs_dir() / run_id / "best_config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Best of {len(trials)} trials of search run {run_id} (validation {metric} "
                        f"{best.validation[metric]:.4f}); train it with: tuneops train {path}\n"
                        + yaml.safe_dump(best_config, sort_keys=False))
        tracking.log_text(run_id, path.read_text(), "search/best_config.yaml")
        markdown = report(trials, best, metric)
        tracking.log_text(run_id, markdown, "search/report.md")
        tracking.log_metrics(run_id, {f"best_validation_{metric}": best.validation[metric]})
        create_markdown_artifact(markdown, key="hyperparameter-search", description="Trials and the best config")
    return SearchOutcome(trials, best, str(path), run_id)
