"""The gate task: decide promotion with tuneops.evaluation.gate's statistics and record the decision on the run."""

from __future__ import annotations

import pandas as pd
from prefect import task

from tuneops.config import GateConfig
from tuneops.evaluation.gate import GateDecision, decide
from tuneops.evaluation.results import ChampionScores, Evaluation


@task(name="gate")
def gate(challenger: Evaluation, champion: ChampionScores | None, cfg: GateConfig, run_id: str,
         baseline: Evaluation | None = None) -> GateDecision:
    """Decide promotion and record the decision, its reason and every number on the run."""
    import json

    from tuneops.registry import tracking

    previous = None
    if champion is not None and champion.challenger_previous and champion.champion_previous:
        previous = (pd.read_parquet(champion.challenger_previous.predictions_path),
                    pd.read_parquet(champion.champion_previous.predictions_path))
    decision = decide(pd.read_parquet(challenger.predictions_path), cfg,
                      pd.read_parquet(champion.current.predictions_path) if champion else None,
                      champion.version if champion else None, previous,
                      (baseline.name, pd.read_parquet(baseline.predictions_path)) if baseline else None)
    tracking.set_tags(run_id, {"tuneops.gate.passed": decision.passed, "tuneops.gate.reason": decision.reason[:5000]})
    tracking.log_text(run_id, json.dumps(decision.to_dict(), indent=2, default=float), "gate/decision.json")
    return decision
