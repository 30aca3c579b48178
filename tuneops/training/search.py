"""Hyperparameter search as pure functions: the trial configurations of a search space, and the report.

The tune_hyperparameters flow trains each trial (tuneops.tasks.search) and picks the best on validation.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import yaml

from tuneops.config import SearchConfig, TuneopsConfig, apply_overrides, validate_config
from tuneops.errors import ConfigError


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
