"""MLflow helpers against the real SQLite store: names built from company labels are always accepted."""

from __future__ import annotations

from mlflow import MlflowClient

from tuneops.registry import tracking


def test_label_names_with_any_character_are_logged_under_a_safe_name():
    client = MlflowClient()
    run = client.create_run(tracking.experiment_id("tracking-names"))
    run_id = run.info.run_id
    tracking.log_metrics(run_id, {"test_f1.reverted_card_payment?": 0.5, "test_f1.card (new)": 0.25,
                                  "test_f1.Überweisung": 1.0})
    tracking.log_params(run_id, {"labels": {"why?": "x"}})
    tracking.set_tags(run_id, {"slice#1": "y"})
    data = client.get_run(run_id).data
    assert data.metrics == {"test_f1.reverted_card_payment_": 0.5, "test_f1.card _new_": 0.25,
                            "test_f1.Überweisung": 1.0}
    assert data.params["labels.why_"] == "x" and data.tags["slice_1"] == "y"


def test_more_metrics_than_one_mlflow_batch_holds_are_all_logged():
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id("tracking-names")).info.run_id
    tracking.log_metrics(run_id, {f"test_f1.intent_{i}": i / 2500 for i in range(2500)})
    metrics = client.get_run(run_id).data.metrics
    assert len(metrics) == 2500 and metrics["test_f1.intent_2499"] == 2499 / 2500
