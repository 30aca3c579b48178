"""The whole train_model flow on a real temporary Prefect server and a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli, tiny_config
from tuneops.errors import DataError
from tuneops.registry import versions as registry

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT_DATA = Path(__file__).resolve().parents[2] / "data/banking77/train.csv"


@pytest.fixture(scope="module")
def trained_twice(prefect_server, tiny_model, company_csv):
    """Two runs of the flow on the same data: the second is gated against the first's champion."""
    from tuneops.flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "flow-twice")
    return train_model(config=cfg), train_model(config=cfg)


def test_first_run_registers_champion_with_provenance(trained_twice):
    first, _ = trained_twice
    assert first.registration.version == "1"
    assert first.decision.passed and first.decision.reason.startswith("passed: first model, all floors met; accuracy")
    reason = first.decision.reason  # the baseline is reported there, not gated (tiny_config)
    assert "over the baseline (TF-IDF + logistic regression, CI [" in reason and reason.endswith(", not gated)")
    mv = MlflowClient().get_model_version("flow-twice", "1")
    for tag in ("tuneops.data.fingerprint", "tuneops.code_version", "tuneops.config_hash", "tuneops.base_model",
                "tuneops.method", "tuneops.gate.passed", "tuneops.gate.reason", "tuneops.metric.test_accuracy",
                "tuneops.split.test.fingerprint", "tuneops.baseline.name", "tuneops.baseline.test_accuracy",
                "tuneops.lift_over_baseline.accuracy", "tuneops.lift_over_baseline.ci"):
        assert mv.tags.get(tag), f"version 1 lacks {tag}"
    assert mv.tags["tuneops.gate.passed"] == "True"
    assert mv.tags["tuneops.metric.test_accuracy"] == f"{first.test_metrics['accuracy']:.6f}"
    run = MlflowClient().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.method"] == "full"
    assert "test_accuracy" in run.data.metrics and "validation_accuracy" in run.data.metrics
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert inputs["test"] == mv.tags["tuneops.split.test.fingerprint"]
    assert inputs["dataset"] == mv.tags["tuneops.data.fingerprint"]
    assert set(inputs) == {"dataset", "train", "validation", "test"}
    artifacts = {a.path for a in MlflowClient().list_artifacts(first.run_id)}
    assert {"splits", "validation", "gate", "config", "evaluation", "MODEL_CARD.md"} <= artifacts
    evaluation = {a.path for a in MlflowClient().list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/confusion_matrix.png", "evaluation/confusion_matrix.csv",
            "evaluation/per_class.csv"} <= evaluation
    report = Path(MlflowClient().download_artifacts(first.run_id, "evaluation/report.md")).read_text()
    assert "## Per class" in report and "## Gate: PASSED" in report and "floor accuracy" in report
    assert mv.description.startswith("# Model card: flow-twice") and "## Gate decision" in mv.description
    assert "ece" in first.test_metrics and 0 <= first.test_metrics["ece"] <= 1


def test_second_run_rescored_champion_on_same_split(trained_twice):
    first, second = trained_twice
    assert second.registration.version == "2"
    assert second.decision.champion_version == "1"
    run = MlflowClient().get_run(second.run_id).data
    assert run.tags["tuneops.champion_version"] == "1"
    # Same data, same seed, same split: the re-scored champion equals the first run's own test score.
    assert run.metrics["champion_test_accuracy"] == pytest.approx(first.test_metrics["accuracy"])
    vs = [c for c in second.decision.checks if c["check"].startswith("vs champion")]
    assert vs and vs[0]["delta"] == pytest.approx(second.test_metrics["accuracy"] - first.test_metrics["accuracy"])
    assert vs[0]["ci_low"] <= vs[0]["delta"] <= vs[0]["ci_high"]
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
    from tuneops.flows.train_model import train_model

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
    from tuneops.flows.train_model import train_model

    bad = tmp_path / "bad.csv"
    frame = pd.DataFrame({"text": ["hello there"] * 30 + [""] * 5, "category": ["a"] * 15 + ["b"] * 20})
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError, match="text not null|text not blank"):
        train_model(config=tiny_config(str(bad), tiny_model, "flow-bad-data"))
    assert MlflowClient().search_model_versions("name = 'flow-bad-data'") == []
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string="attributes.run_name = 'flow-bad-data'",
                              output_format="list")
    assert runs and runs[0].info.status == "FAILED"
    assert "train_seconds" not in runs[0].data.metrics


def test_predict_cli_uses_champion_or_given_version(trained_twice, tmp_path, tiny_model, company_csv):
    import yaml

    cfg = tiny_config(company_csv, tiny_model, "flow-twice")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    queries = tmp_path / "in.csv"
    pd.DataFrame({"text": ["how do I change my pin", "what is the exchange rate", "card not here yet"]}).to_csv(
        queries, index=False)
    proc = run_cli("predict", "--config", str(config), "--input", str(queries), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 0, proc.stderr
    out = pd.read_json(tmp_path / "o.jsonl", lines=True)
    assert list(out.columns) == ["text", "label", "confidence", "model_version"]
    assert (out.model_version.astype(str) == "2").all() and len(out) == 3
    proc = run_cli("predict", "--config", str(config), "--input", str(queries), "--output", str(tmp_path / "o.csv"),
                "--version", "1")
    assert proc.returncode == 0, proc.stderr
    assert (pd.read_csv(tmp_path / "o.csv").model_version == 1).all()
    proc = run_cli("predict", "--config", str(config), "--input", str(tmp_path / "missing.csv"), "--output",
                str(tmp_path / "x.csv"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_without_champion_is_a_clear_error(tmp_path, tiny_model, company_csv):
    import yaml

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(company_csv, tiny_model, "never-trained").model_dump(mode="json")))
    proc = run_cli("predict", "--config", str(config), "--input", company_csv, "--output", str(tmp_path / "o.csv"))
    assert proc.returncode == 1 and "has no champion yet" in proc.stderr


def test_rollback_and_forced_promotion(prefect_server, tiny_model, company_csv):
    from tuneops.flows.train_model import train_model

    name = "flow-promote"
    train_model(config=tiny_config(company_csv, tiny_model, name))
    train_model(config=tiny_config(company_csv, tiny_model, name))
    failed = train_model(config=tiny_config(company_csv, tiny_model, name, gate={"floors": {"accuracy": 1.0}}))
    assert failed.registration.version == "3" and registry.alias_version(name, "champion") == "2"

    proc = run_cli("rollback", name, "--reason", "v2 misroutes refunds")
    assert proc.returncode == 0, proc.stderr
    assert registry.alias_version(name, "champion") == "1" and registry.alias_version(name, "previous") == "2"
    tags = MlflowClient().get_model_version(name, "1").tags
    assert tags["tuneops.promotion_reason"] == "rollback: v2 misroutes refunds"
    assert tags["tuneops.promoted_from"] == "2"

    proc = run_cli("promote", name, "3", "--reason", "try it")
    assert proc.returncode == 1 and "did not pass its gate" in proc.stderr and "--force" in proc.stderr
    assert registry.alias_version(name, "champion") == "1"
    proc = run_cli("promote", name, "3", "--force")
    assert proc.returncode == 1 and "needs a --reason" in proc.stderr
    proc = run_cli("promote", name, "3", "--force", "--reason", "business override")
    assert proc.returncode == 0, proc.stderr
    assert registry.alias_version(name, "champion") == "3" and registry.alias_version(name, "previous") == "1"


def test_retried_registration_reuses_the_version(trained_twice, tiny_model, company_csv):
    """A Prefect retry of register-model after the version was created must not add a version."""
    from tuneops.registry.versions import log_and_register

    first, _ = trained_twice
    cfg = tiny_config(company_csv, tiny_model, "flow-twice")
    again = log_and_register(None, cfg, {"tuneops.gate.reason": "retry"}, None, {}, should_promote=False,
                             run_id=first.run_id)
    assert again.version == "1"
    assert len(MlflowClient().search_model_versions("name = 'flow-twice'")) == 2


def test_retraining_on_new_data_checks_forgetting(prefect_server, tiny_model, company_csv, tmp_path):
    """With new rows, the test split changes; the challenger is also scored on the champion's old split."""
    from tuneops.flows.train_model import train_model

    name = "flow-forgetting"
    train_model(config=tiny_config(company_csv, tiny_model, name))
    df = pd.read_csv(ROOT_DATA)
    old = pd.read_csv(company_csv)
    extra = df[df.category.isin(old.category.unique()) & ~df.text.isin(old.text)].groupby("category").head(15)
    grown = tmp_path / "grown.csv"
    pd.concat([old, extra]).to_csv(grown, index=False)
    outcome = train_model(config=tiny_config(str(grown), tiny_model, name))
    forgetting = [c for c in outcome.decision.checks if c["check"].startswith("forgetting")]
    assert forgetting and forgetting[0]["rows"] > 0
    run = MlflowClient().get_run(outcome.run_id).data
    assert "previous_test_accuracy" in run.metrics


def test_promote_model_flow_rolls_back_from_prefect(trained_twice):
    from tuneops.flows.promote_model import promote_model

    result = promote_model(name="flow-twice", action="rollback", reason="from the Prefect UI")
    assert result == {"model": "flow-twice", "champion": "1", "previous": "2"}
    result = promote_model(name="flow-twice", version="2", reason="restore")
    assert result["champion"] == "2" and registry.alias_version("flow-twice", "previous") == "1"
