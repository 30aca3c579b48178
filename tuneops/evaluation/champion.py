"""The champion re-scored on the challenger's test rows (and both on the champion's own previous split).

Comparing with the champion's recorded metrics would compare different test sets, so the gate always
scores both models on the same rows. Shared by every family: the family supplies how to load and score.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.evaluation.results import ChampionScores, Evaluation

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig


def previous_test_split(name: str, version: str, current_fingerprint: str, out_dir: Path) -> str | None:
    """The champion's own test split, when it differs from the current one (new data arrived)."""
    from tuneops.registry.tracking import client

    mv = client().get_model_version(name, version)
    if mv.tags.get("tuneops.split.test.fingerprint") in (None, current_fingerprint) or not mv.run_id:
        return None
    return client().download_artifacts(mv.run_id, "splits/test.parquet", str(out_dir))



def rescore_champion(cfg: TuneopsConfig, test_path: str, test_fingerprint: str, out_dir: Path, run_id: str,
                     load_champion: Callable[[str, str], Any], load_challenger: Callable[[], Any],
                     score_with: Callable[[Any, pd.DataFrame, TuneopsConfig, Path], Evaluation]
                     ) -> ChampionScores | None:
    """The champion on this test split; both models on the champion's previous test split when it differs.

    Shared by both task families: ``load_champion(name, version)`` and ``load_challenger()`` give the
    models' predict functions, ``score_with`` scores one of them on a frame.
    """
    from tuneops.registry import tracking
    from tuneops.registry import versions as registry

    name = cfg.registry.model_name
    version = registry.alias_version(name, "champion")
    if version is None:
        return None
    champion = load_champion(name, version)
    scores = ChampionScores(version, score_with(champion, pd.read_parquet(test_path), cfg,
                                                out_dir / "champion_test.parquet"))
    tracking.log_metrics(run_id, {f"champion_test_{k}": v for k, v in scores.current.metrics.items()})
    tracking.set_tags(run_id, {"tuneops.champion_version": version})
    previous = previous_test_split(name, version, test_fingerprint, out_dir / "previous")
    if previous is not None:
        frame = pd.read_parquet(previous)
        # A previous split of another data contract (a supervised champion's split under a preference config, with
        # no prompt column of this config) is not the same task: the family scores that task its own way.
        if all(c in frame.columns for c in [cfg.split_data().text_column, *cfg.gate.slice_columns]):
            scores.champion_previous = score_with(champion, frame, cfg, out_dir / "champion_previous.parquet")
            scores.challenger_previous = score_with(load_challenger(), frame, cfg,
                                                    out_dir / "challenger_previous.parquet")
            tracking.log_metrics(run_id, {f"previous_test_{k}": v for k, v in
                                          scores.challenger_previous.metrics.items()})
    return scores
