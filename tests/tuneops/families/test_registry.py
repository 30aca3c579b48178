"""Task families are found by name: a third one registered here passes config loading and goes through the
train_model flow end to end, with no edit anywhere else."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import tiny_config
from tuneops import families
from tuneops.errors import ConfigError


def test_every_family_is_registered_and_complete():
    from peft import TaskType

    assert {"classification", "causal_lm", "preference", "language_modeling"} <= set(families.FAMILIES)
    for family in families.FAMILIES.values():
        assert family.peft_task_type in TaskType.__members__  # what the methods in tuneops/methods/ wrap
        # A default floor is on the primary metric; a family whose metric has no absolute scale (log-likelihood,
        # preference accuracy against the champion's) sets none.
        floors = family.gate_defaults["floors"]
        assert floors == {} or family.gate_defaults["primary_metric"] in floors
        assert family.unsupported or (family.prediction_columns and family.drift_signals and family.search_metric)
        # Monitoring is offered exactly where the family says what its log holds and how its outputs drift.
        assert bool(family.prediction_columns) == bool(family.drift_signals) == (family.prediction_drift is not None)


def test_the_config_describes_every_family_and_names_an_unknown_one():
    from tuneops.config import ModelConfig, validate_config

    description = ModelConfig.model_fields["task"].description
    assert all(f"'{name}'" in description for name in families.FAMILIES)
    with pytest.raises(ConfigError, match=r"unknown model.task 'clasification' \(did you mean 'classification'\?\)"):
        validate_config({"data": {"path": "x.csv"}, "model": {"task": "clasification"}})


def test_every_drift_signal_a_family_declares_has_a_threshold_and_every_threshold_a_family():
    from tuneops.config import DriftThresholds

    declared = [set(f.drift_signals) for f in families.FAMILIES.values() if f.drift_signals]
    assert set().union(*declared) == set(DriftThresholds.model_fields)
    assert len(declared) >= 2  # classifiers and generators are both monitored
    from tuneops.monitoring.drift import TEXT_METHODS

    assert set(families.INPUT_SIGNALS) == {*TEXT_METHODS, "embedding"}  # what drift.py computes for every family
    assert all(set(families.INPUT_SIGNALS) <= set(f.drift_signals) for f in families.FAMILIES.values()
               if f.drift_signals)


@pytest.fixture
def toy_family():
    """A third family: a classifier variant with its own config rule, gate default and a recorded trainer plan."""
    base = families.get("classification")
    calls: list[str] = []

    def plan_training(cfg, frames, model_path):
        calls.append(f"plan_training:{cfg.model.task}")
        return base.plan_training(cfg, frames, model_path)

    def config_problems(cfg):
        return [] if cfg.data.label_column == "category" else ["the toy family reads labels from 'category'"]

    toy = dataclasses.replace(base, name="toy_intents", summary="a toy family registered by a test", noun="toy",
                              gate_defaults={"primary_metric": "macro_f1", "floors": {"macro_f1": 0.0}},
                              config_problems=config_problems, plan_training=plan_training)
    families.register(toy)
    yield calls
    families.FAMILIES.pop("toy_intents")


def test_a_registered_third_family_passes_config_loading(toy_family, company_csv, tiny_model):
    cfg = tiny_config(company_csv, tiny_model, "toy", model={"base": tiny_model, "task": "toy_intents"})
    assert cfg.model.task == "toy_intents" and cfg.gate.primary_metric == "macro_f1"  # the family's own default
    with pytest.raises(ConfigError, match="the toy family reads labels from 'category'"):
        tiny_config(company_csv, tiny_model, "toy", data={"path": company_csv, "label_column": "text"},
                    model={"base": tiny_model, "task": "toy_intents"})


@pytest.mark.slow
@pytest.mark.integration
def test_a_registered_third_family_trains_and_registers_through_the_flow(toy_family, prefect_server, company_csv,
                                                                         tiny_model):
    from mlflow import MlflowClient

    from tuneops.flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "toy-family", model={"base": tiny_model, "task": "toy_intents"})
    outcome = train_model(config=cfg)
    assert toy_family == ["plan_training:toy_intents"], "the shared trainer asked the toy family for its plan"
    version = MlflowClient().get_model_version("toy-family", outcome.registration.version)
    assert version.tags["tuneops.task"] == "toy_intents"
    assert "vs champion" not in outcome.decision.reason and outcome.registration.promoted


def test_a_family_name_registered_by_another_module_is_refused_naming_both():
    from tuneops.plugins import NameTaken

    classification = families.get("classification")
    impostor = dataclasses.replace(classification, summary="another classifier")
    with pytest.raises(NameTaken, match=r"task family 'classification' is registered twice: by "
                       r"tuneops\.families\.classification\S* and by tests\.tuneops\.families\.test_registry"):
        families.register(impostor)
    assert families.get("classification") is classification
