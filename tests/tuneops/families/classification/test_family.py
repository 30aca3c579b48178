"""The classification family's pure pieces, tested on their own (no Prefect, no MLflow): the data contract,
calibration, the model card, and the provenance tags every registered version carries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config
from tuneops import families
from tuneops.data.splits import SplitResult
from tuneops.evaluation.gate import GateDecision
from tuneops.evaluation.metrics import expected_calibration_error
from tuneops.registry.versions import provenance_tags, serving_requirements
from tuneops.training.trainer import TrainResult

FAMILY = families.get("classification")


def frame(rows: dict[str, int]) -> pd.DataFrame:
    texts, labels = [], []
    for label, n in rows.items():
        texts += [f"message {i} about {label}" for i in range(n)]
        labels += [label] * n
    return pd.DataFrame({"text": texts, "category": labels})


@pytest.fixture
def cfg(tiny_model):
    return tiny_config("x.csv", tiny_model, "unit", validation={"min_rows_per_class": 5, "min_rows": 10})


def failing(report) -> dict[str, int]:
    return {c.name: c.failing_rows for c in report.failures()}


def test_a_clean_dataset_passes_the_contract(cfg):
    report = FAMILY.validate(frame({"a": 8, "b": 8}), cfg, None)
    assert report.passed, report.summary()
    assert {"row count", "text not null", "conflicting labels", "personal data", "token length"} <= {
        c.name for c in report.checks}


def test_conflicts_small_classes_and_personal_data_are_named(cfg):
    df = frame({"a": 8, "b": 3})
    df.loc[0, "text"], df.loc[8, "text"] = "No thanks", "no  THANKS"  # the same text, normalised, two labels
    df.loc[1, "text"] = "write to jane.doe@example.com"
    report = FAMILY.validate(df, cfg, None)
    found = failing(report)
    assert found["conflicting labels"] == 2 and found["rows per class"] == 3 and found["personal data"] == 1
    assert "jane.doe@example.com" not in report.summary()  # examples are masked in every report


def test_missing_columns_stop_the_contract_early(cfg):
    report = FAMILY.validate(pd.DataFrame({"body": ["x"] * 20}), cfg, None)
    assert [c.name for c in report.checks] == ["required columns"] and not report.passed
    assert "data.text_column / data.label_column" in report.summary()


def test_redaction_masks_personal_data_before_training(cfg):
    redacting = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"pii_policy": "redact"})})
    df = pd.DataFrame({"text": ["call +44 20 7946 0958 now", "plain"], "category": ["a", "b"]})
    prepared = FAMILY.prepare_data(df, redacting)
    assert "7946" not in prepared.text.iloc[0] and prepared.text.iloc[1] == "plain"
    assert FAMILY.prepare_data(df, cfg) is df  # pii_policy fail/warn: the rows are used as they are


def test_expected_calibration_error():
    assert expected_calibration_error(np.ones(10), np.ones(10, dtype=bool)) == pytest.approx(0.0)
    # 80% confident, right half the time: off by 0.3 in the one occupied bin.
    assert expected_calibration_error(np.full(10, 0.8), np.arange(10) % 2 == 0) == pytest.approx(0.3)
    confidence = np.array([0.95] * 4 + [0.55] * 4)
    correct = np.array([True] * 4 + [True, False, True, False])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


SPLITS = SplitResult(paths={}, sizes={"train": 70, "validation": 10, "test": 20},
                     fingerprints={"train": "f-train", "validation": "f-val", "test": "f-test"},
                     class_counts={})
TRAINED = TrainResult(model_dir="/nowhere", labels=["a", "b"], train_seconds=1.0, eval_seconds=0.1,
                      trainable_params=10, total_params=100, best_validation={"accuracy": 0.9})


def test_provenance_tags_say_data_code_config_base_metrics_and_verdict(cfg):
    decision = GateDecision(False, "not promoted: accuracy 0.4000 is below the floor 0.5000")
    tags = provenance_tags(cfg, "data-fp", SPLITS, {"accuracy": 0.4, "macro_f1": 0.3, "seconds": 2.0}, decision,
                           "abc123")
    assert tags["tuneops.data.fingerprint"] == "data-fp" and tags["tuneops.code_version"] == "abc123"
    assert tags["tuneops.config_hash"] == cfg.fingerprint() and tags["tuneops.base_model"] == cfg.model.base
    assert tags["tuneops.task"] == "classification" and tags["tuneops.method"] == "full"
    assert tags["tuneops.gate.passed"] == "False" and tags["tuneops.gate.reason"].startswith("not promoted")
    assert tags["tuneops.split.test.fingerprint"] == "f-test" and tags["tuneops.metric.test_accuracy"] == "0.400000"
    assert "tuneops.metric.test_seconds" not in tags


def test_model_card_names_labels_data_metrics_and_decision(cfg):
    tags = provenance_tags(cfg, "data-fp", SPLITS, {"accuracy": 0.9, "macro_f1": 0.8, "ece": 0.05},
                           GateDecision(True, "passed: first model, all floors met"), "abc123")
    card = FAMILY.model_card(cfg, tags, SPLITS, {"accuracy": 0.9, "macro_f1": 0.8, "ece": 0.05}, TRAINED)
    assert card.startswith("# Model card: unit") and "2 labels (a, b)" in card
    assert "fingerprint `data-fp`" in card and "accuracy 0.9000" in card and "passed: first model" in card
    assert "test 20 rows (`f-test`)" in card


def test_registered_models_require_the_pins_the_project_declares():
    import tomllib

    from tests.conftest import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("=")[0].split(">")[0].split("<")[0]: d for d in declared}
    required = serving_requirements()
    assert [r.split("=")[0].split(">")[0].split("<")[0] for r in required] == [
        "torch", "transformers", "peft", "pandas", "mlflow"]
    for requirement in required:
        name = requirement.split("=")[0].split(">")[0].split("<")[0]
        assert sorted(requirement.removeprefix(name).split(",")) == sorted(
            pins[name].removeprefix(name).replace(" ", "").split(",")), (requirement, pins[name])
