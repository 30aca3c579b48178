"""The causal_lm task family in the config: required columns, family-specific gate metrics, defaults."""

from __future__ import annotations

import pytest

from tuneops.config import validate_config
from tuneops.errors import ConfigError

DATA = {"path": "x.csv", "prompt_column": "prompt", "response_column": "response"}


def test_causal_lm_defaults_gate_to_generation_metrics():
    cfg = validate_config({"data": DATA, "model": {"task": "causal_lm"}})
    assert cfg.gate.primary_metric == "rouge_l" and cfg.gate.floors == {"rouge_l": 0.0}
    assert cfg.split_data().text_column == "prompt" and cfg.split_data().label_column == "response"
    assert "{prompt}" in cfg.model.prompt_template
    assert validate_config({"data": {"path": "x.csv"}}).gate.primary_metric == "accuracy"  # classification unchanged


def test_causal_lm_problems_are_named():
    with pytest.raises(ConfigError) as err:
        validate_config({"data": {"path": "x.csv", "prompt_column": "p"}, "model": {"task": "causal_lm"},
                         "gate": {"primary_metric": "accuracy", "floors": {"macro_f1": 0.5}}})
    msg = str(err.value)
    assert "needs data.prompt_column and data.response_column" in msg
    assert "gate.primary_metric 'accuracy' is a classification metric" in msg
    assert "gate.floors macro_f1 do not apply to causal_lm" in msg


@pytest.mark.parametrize(("raw", "message"), [
    ({"data": {**DATA, "messages_column": "m"}, "model": {"task": "causal_lm"}}, "are alternatives"),
    ({"data": DATA}, "set but model.task is 'classification'"),
    ({"data": DATA, "model": {"task": "causal_lm", "prompt_template": "no slot"}}, "must contain '{prompt}'"),
    ({"data": DATA, "model": {"task": "causal_lm"}, "gate": {"test": "mcnemar"}}, "mcnemar"),
    ({"data": DATA, "model": {"task": "generate"}}, "model.task"),
    ({"data": {**DATA, "max_rows_per_label": 5}, "model": {"task": "causal_lm"}}, "subset a classifier's labels"),
    ({"data": {"path": "x.csv"}, "gate": {"max_perplexity": 20}}, "gate.max_perplexity set but model.task"),
    ({"data": DATA, "model": {"task": "causal_lm"}, "gate": {"max_perplexity": 0.5}}, "greater than 1"),
    ({"data": {"path": "x.csv"}, "model": {"response_format": "json_list"}}, "model.response_format set but"),
    ({"data": {"path": "x.csv"}, "model": {"system_prompt": "Be brief."}}, "model.system_prompt set but"),
    ({"data": DATA, "model": {"task": "causal_lm"}, "gate": {"primary_metric": "set_match"}},
     "gate set_match score JSON-list answers; set model.response_format: json_list"),
    ({"data": DATA, "model": {"task": "causal_lm"}, "gate": {"floors": {"json_valid": 0.9}}}, "json_valid score"),
])
def test_causal_lm_contradictions_fail(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_causal_lm_accepts_a_distributed_launch(launcher):
    """One trainer for every family: a causal LM trains over several processes like a classifier."""
    distributed = {"launcher": launcher, "processes": 2}
    if launcher == "deepspeed":
        distributed["deepspeed_config"] = "configs/deepspeed/zero2.json"
    cfg = validate_config({"data": DATA, "model": {"task": "causal_lm"}, "training": {"distributed": distributed}})
    assert cfg.training.distributed.launcher == launcher and cfg.training.distributed.processes == 2


def test_family_defaults_are_filled_before_validation_not_written_after():
    """The family's gate defaults are part of the validated object; nothing writes into it afterwards."""
    cfg = validate_config({"data": DATA, "model": {"task": "causal_lm"}})
    assert "primary_metric" in cfg.gate.model_fields_set and cfg.gate.primary_metric == "rouge_l"
    explicit = validate_config({"data": DATA, "model": {"task": "causal_lm"},
                                "gate": {"primary_metric": "exact_match"}})
    assert explicit.gate.primary_metric == "exact_match" and explicit.gate.floors == {"rouge_l": 0.0}
    assert validate_config(cfg.model_dump(mode="json")) == cfg  # a dumped config reloads to the same object


def test_generation_floors_and_exact_match_primary_are_accepted():
    cfg = validate_config({"data": DATA, "model": {"task": "causal_lm"},
                           "gate": {"primary_metric": "exact_match", "floors": {"exact_match": 0.3, "rouge_l": 0.4}}})
    assert cfg.gate.primary_metric == "exact_match" and cfg.gate.floors["rouge_l"] == 0.4


def test_json_list_answers_are_gated_on_set_match_and_json_validity():
    cfg = validate_config({"data": DATA, "model": {"task": "causal_lm", "response_format": "json_list",
                                                   "stop_strings": ["]"], "system_prompt": "List the intents."},
                           "gate": {"primary_metric": "set_match", "floors": {"set_match": 0.4, "json_valid": 0.9}}})
    assert cfg.gate.primary_metric == "set_match" and cfg.model.stop_strings == ["]"]
