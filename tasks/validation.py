"""The validate-data task: run the family's data contract (tuneops/families/), record the report, stop on failure.

The checks themselves are the family's (``TaskFamily.validate``); the report shape and the Great
Expectations runner are :mod:`tuneops.data.validation`. Nothing is trained on data that failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops import families
from tuneops.config import TuneopsConfig
from tuneops.data.validation import POLICY_TAG
from tuneops.errors import DataError


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(df: pd.DataFrame, cfg: TuneopsConfig, run_id: str) -> pd.DataFrame:
    """Validate the dataset, record the report, stop the flow if it failed; return the data to train on."""
    from tuneops.registry import tracking

    family = families.of(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        report = family.validate(df, cfg, Path(tmp) / "data_docs")
        if report.data_docs:
            tracking.log_artifacts(run_id, Path(report.data_docs).parent, "validation/data_docs")
    tracking.log_text(run_id, report.to_json(), "validation/report.json")
    tracking.log_text(run_id, report.to_markdown(), "validation/report.md")
    tracking.set_tags(run_id, {"tuneops.validation.passed": report.passed,
                               "tuneops.validation.warnings": len(report.warnings()),
                               **({"tuneops.validation.kept_rows": report.kept_rows} if report.policies else {}),
                               **{f"{POLICY_TAG}{k}": v for k, v in report.policies.items()}})
    create_markdown_artifact(report.to_markdown(), key="data-validation",
                             description="Great Expectations checks on the training data")
    if not report.passed:
        raise DataError(report.summary())
    return family.prepare_data(df, cfg)
