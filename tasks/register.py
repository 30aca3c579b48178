"""The register-model task: log the trained model as an MLflow pyfunc, register it, move aliases per the gate.

The registration itself (provenance tags, one version per run, the family's model card and pyfunc)
is :func:`tuneops.registry.versions.log_and_register`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.data.splits import SplitResult
from tuneops.data.validation import POLICY_TAG
from tuneops.evaluation.gate import GateDecision
from tuneops.registry.versions import Registration, log_and_register, provenance_tags
from tuneops.training.trainer import TrainResult


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_model(trained: TrainResult, cfg: TuneopsConfig, data_fingerprint: str, splits: SplitResult,
                   metrics: dict[str, float], decision: GateDecision, run_id: str) -> Registration:
    """Register the challenger with its provenance; promote it if the gate passed and config allows."""
    from tuneops.registry import tracking

    tags = provenance_tags(cfg, data_fingerprint, splits, metrics, decision, tracking.code_version())
    run_tags = tracking.client().get_run(run_id).data.tags  # what the data policies did (tasks/validation.py)
    tags.update({k: v for k, v in run_tags.items() if k.startswith(POLICY_TAG)})
    tags.update(trained.merge_check)  # merged vs unmerged: a merging runtime reads it from the version
    tracking.set_tags(run_id, tags)
    tracking.log_text(run_id, json.dumps(cfg.model_dump(mode="json"), indent=2), "config/resolved_config.json")
    result = log_and_register(trained, cfg, tags, splits, metrics, decision.passed and cfg.gate.auto_promote, run_id)
    shutil.rmtree(Path(trained.model_dir).parent, ignore_errors=True)
    return result
