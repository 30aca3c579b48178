"""The classification baseline (TF-IDF + logistic regression) in the gate, and the data policies for real exports,
through the train_model flow on a real temporary Prefect server and SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]
KEYWORDS = ("refund", "invoice", "password", "delivery")


@pytest.fixture(scope="module")
def keyword_csv(tmp_path_factory) -> str:
    """Labels decided by one keyword among random filler words: a bag of words solves it at once."""
    rng = np.random.default_rng(0)
    filler = [f"w{i}" for i in range(300)]
    rows = []
    for label in KEYWORDS:
        for _ in range(40):
            words = list(rng.choice(filler, size=6))
            words.insert(int(rng.integers(0, 7)), label)
            rows.append({"text": " ".join(words), "category": label})
    path = tmp_path_factory.mktemp("keywords") / "keywords.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_a_model_that_does_not_beat_tfidf_is_not_promoted(prefect_server, tiny_model, keyword_csv):
    from tuneops.flows.train_model import train_model

    name = "baseline-wins"
    cfg = tiny_config(keyword_csv, tiny_model, name, training={"epochs": 1, "learning_rate": 1e-4},
                      gate={"min_lift_over_baseline": 0.0})  # the classifier family's default bar
    outcome = train_model(config=cfg)
    d = outcome.decision
    assert not d.passed and not outcome.registration.promoted
    assert d.reason.startswith("not promoted: lift over baseline (TF-IDF + logistic regression, accuracy)")
    assert "(gate.min_lift_over_baseline): it does not beat what it started from" in d.reason
    lift = next(c for c in d.checks if c["check"].startswith("lift over baseline"))
    assert lift["baseline"] > 0.9 and lift["ci_low"] < 0  # the keyword is all a bag of words needs
    mv = MlflowClient().get_model_version(name, "1")
    assert mv.tags["tuneops.gate.passed"] == "False"
    assert mv.tags["tuneops.baseline.name"] == "TF-IDF + logistic regression"
    assert float(mv.tags["tuneops.baseline.test_accuracy"]) == pytest.approx(lift["baseline"], abs=1e-6)
    assert float(mv.tags["tuneops.lift_over_baseline.accuracy"]) == pytest.approx(
        outcome.test_metrics["accuracy"] - lift["baseline"], abs=1e-6)
    assert mv.tags["tuneops.lift_over_baseline.ci"] == f"[{lift['ci_low']:+.6f}, {lift['ci_high']:+.6f}]"
    assert mv.tags["tuneops.lift_over_baseline.bar"] == "+0.000000"
    assert "Baseline TF-IDF + logistic regression on the same test rows: accuracy" in mv.description  # model card
    report = Path(MlflowClient().download_artifacts(outcome.run_id, "evaluation/report.md")).read_text()
    assert "Baseline (TF-IDF + logistic regression, fitted on the same" in report
    assert "| lift over baseline (TF-IDF + logistic regression, accuracy) | FAIL |" in report
    assert "baseline F1" in report
    assert MlflowClient().get_run(outcome.run_id).data.metrics["baseline_test_accuracy"] == lift["baseline"]


@pytest.fixture(scope="module")
def conflicting_csv(tmp_path_factory, company_csv) -> str:
    """The company slice plus generic turns labelled several ways, as real exports hold them."""
    df = pd.read_csv(company_csv)
    extra = pd.DataFrame({"text": ["No thanks", "no thanks", "No  thanks", "ok", "OK"],
                          "category": ["card_arrival", "card_arrival", "change_pin", "card_arrival", "exchange_rate"]})
    path = tmp_path_factory.mktemp("conflicts") / "export.csv"
    pd.concat([df, extra], ignore_index=True).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("policy, removed, record", [
    ("drop", 5, "drop: 5 rows removed (2 texts)"),
    ("majority", 3, "majority: 3 rows removed (2 texts, 1 ties)"),
])
def test_conflicting_labels_policy_lets_the_run_train(prefect_server, tiny_model, conflicting_csv, policy, removed,
                                                       record):
    from tuneops.errors import DataError
    from tuneops.flows.train_model import train_model

    name = f"conflicts-{policy}"
    if policy == "drop":  # the default refuses the same export and says which setting to change
        with pytest.raises(DataError, match="validation.conflicting_labels: drop"):
            train_model(config=tiny_config(conflicting_csv, tiny_model, name))
    cfg = tiny_config(conflicting_csv, tiny_model, name, validation={"conflicting_labels": policy},
                      training={"epochs": 1})
    outcome = train_model(config=cfg)
    client = MlflowClient()
    run = client.get_run(outcome.run_id).data
    total = len(pd.read_csv(conflicting_csv))
    assert run.params["validation.conflicting_labels"] == policy
    assert run.tags["tuneops.data_policy.conflicting_labels"] == record
    assert sum(int(run.params[f"split.{s}.rows"]) for s in ("train", "validation", "test")) == total - removed
    version = client.get_model_version(name, outcome.registration.version)
    assert version.tags["tuneops.data_policy.conflicting_labels"] == record
    assert f"data policy validation.conflicting_labels: {record}" in version.description  # the model card
    report = json.loads(Path(client.download_artifacts(outcome.run_id, "validation/report.json")).read_text())
    assert report["rows"] == total and report["kept_rows"] == total - removed and report["passed"]
    check = next(c for c in report["checks"] if c["name"] == "conflicting labels")
    assert check["failing_rows"] == removed and f"policy {policy}" in check["detail"]
    assert any("No thanks" in e for e in check["examples"])
    markdown = Path(client.download_artifacts(outcome.run_id, "validation/report.md")).read_text()
    assert f"{total - removed} kept for the split after the data policies" in markdown
