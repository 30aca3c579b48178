"""tune_hyperparameters: try configurations on one split, pick the best on validation, write it out.

Every trial is a Prefect task and a nested MLflow run under the search's run. Selection uses the
validation split only; the test split is never scored here, so it stays an honest estimate for the
model that train_model later trains with the best configuration.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tuneops import families, settings
from tuneops.config import TuneopsConfig
from tuneops.errors import ConfigError
from tuneops.registry import tracking
from tuneops.tasks.data import load_dataset
from tuneops.tasks.search import run_trial
from tuneops.tasks.splits import split_dataset
from tuneops.tasks.validation import validate_data
from tuneops.training.search import SearchOutcome, candidates, report, trial_configs


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
