"""The whole train_model flow on a real temporary Prefect server and a real SQLite MLflow store."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_config
from tuneops import registry
from tuneops.errors import DataError

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def trained_twice(prefect_server, tiny_model, company_csv):
    """Two runs of the flow on the same data: the second is gated against the first's champion."""
    from flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "flow-twice")
    return train_model(config=cfg), train_model(config=cfg)


def test_first_run_registers_champion_with_provenance(trained_twice):
    first, _ = trained_twice
    assert first.registration.version == "1"
    assert first.decision.passed and first.decision.reason == "passed: first model, all floors met"
    mv = MlflowClient().get_model_version("flow-twice", "1")
    for tag in ("tuneops.data.fingerprint", "tuneops.code_version", "tuneops.config_hash", "tuneops.base_model",
                "tuneops.method", "tuneops.gate.passed", "tuneops.gate.reason", "tuneops.metric.test_accuracy",
                "tuneops.split.test.fingerprint"):
        assert mv.tags.get(tag), f"version 1 lacks {tag}"
    assert mv.tags["tuneops.gate.passed"] == "True"
    assert mv.tags["tuneops.metric.test_accuracy"] == f"{first.test_metrics['accuracy']:.6f}"
    run = MlflowClient().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.method"] == "full"
    assert "test_accuracy" in run.data.metrics and "validation_accuracy" in run.data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(first.run_id)}
    assert {"splits", "validation", "gate", "config"} <= artifacts


def test_second_run_rescored_champion_on_same_split(trained_twice):
    first, second = trained_twice
    assert second.registration.version == "2"
    assert second.decision.champion_version == "1"
    run = MlflowClient().get_run(second.run_id).data
    assert run.tags["tuneops.champion_version"] == "1"
    # Same data, same seed, same split: the re-scored champion equals the first run's own test score.
    assert run.metrics["champion_test_accuracy"] == pytest.approx(first.test_metrics["accuracy"])
    vs = [c for c in second.decision.checks if c["check"].startswith("vs champion")]
    assert vs and vs[0]["champion"] == pytest.approx(first.test_metrics["accuracy"])
    assert registry.alias_version("flow-twice", "champion") == "2"
    assert registry.alias_version("flow-twice", "previous") == "1"
    assert registry.alias_version("flow-twice", "challenger") == "2"


def test_registered_model_predicts_labels_and_confidences(trained_twice):
    model = mlflow.pyfunc.load_model("models:/flow-twice@champion")
    out = model.predict(pd.DataFrame({"text": ["I want to change my PIN", "my card has not arrived"]}))
    assert list(out.columns) == ["label", "confidence"] and len(out) == 2
    assert set(out.label) <= {"activate_my_card", "card_arrival", "change_pin", "exchange_rate"}
    assert ((out.confidence > 0) & (out.confidence <= 1)).all()


def test_failing_gate_registers_challenger_and_leaves_champion(prefect_server, tiny_model, company_csv):
    from flows.train_model import train_model

    name = "flow-gate-fails"
    train_model(config=tiny_config(company_csv, tiny_model, name))
    strict = tiny_config(company_csv, tiny_model, name, gate={"floors": {"accuracy": 1.0}})
    outcome = train_model(config=strict)
    assert not outcome.decision.passed and outcome.decision.reason.startswith("not promoted: accuracy")
    assert not outcome.registration.promoted
    assert registry.alias_version(name, "champion") == "1"
    assert registry.alias_version(name, "challenger") == "2"
    assert MlflowClient().get_model_version(name, "2").tags["tuneops.gate.passed"] == "False"


def test_bad_data_stops_before_training(prefect_server, tiny_model, tmp_path):
    from flows.train_model import train_model

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["hello there"] * 30 + [""] * 5, "category": ["a"] * 15 + ["b"] * 20}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="text not null|text not blank"):
        train_model(config=tiny_config(str(bad), tiny_model, "flow-bad-data"))
    assert MlflowClient().search_model_versions("name = 'flow-bad-data'") == []
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string="attributes.run_name = 'flow-bad-data'",
                              output_format="list")
    assert runs and runs[0].info.status == "FAILED"
    assert "train_seconds" not in runs[0].data.metrics
