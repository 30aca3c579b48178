"""Each family adds its own settings to the config, and a setting a family does not act on is refused by name.

Every family's fields (tuneops/families/<name>/config.py) sit in the shared sections where users write them;
the config of one family refuses another family's settings with the setting's name and its family, all at
once, while a config written out with every field (as tuneops records configs) reloads.
"""

from __future__ import annotations

import pytest

from tuneops.config import TuneopsConfig, validate_config
from tuneops.errors import ConfigError
from tuneops.families import FAMILIES, schema

BASE = {
    "classification": {"data": {"path": "x.csv"}},
    "causal_lm": {"data": {"path": "x.csv", "prompt_column": "p", "response_column": "r"},
                  "model": {"task": "causal_lm"}},
    "preference": {"data": {"path": "x.csv", "prompt_column": "p", "chosen_column": "c", "rejected_column": "r"},
                   "model": {"task": "preference"}, "preference": {"task_config": "configs/nlupp_intents_llm.yaml"}},
    "language_modeling": {"data": {"path": "x.csv"}, "model": {"task": "language_modeling"}},
}
"""A minimal valid config of each family."""

GIVEN = {
    "data.select_labels": ["a"], "data.max_rows_per_label": 5, "data.prompt_column": "q",
    "data.response_column": "a", "data.messages_column": "m", "data.chosen_column": "good",
    "data.rejected_column": "bad",
    "validation.allowed_labels": ["a"], "validation.min_rows_per_class": 5, "validation.max_class_imbalance": 10,
    "validation.conflicting_labels": "drop", "validation.invalid_texts": "drop", "validation.rare_classes": "drop",
    "model.pooling": "mean", "model.prompt_template": "Q: {prompt}\nA: ", "model.max_new_tokens": 8,
    "model.system_prompt": "Be brief.", "model.stop_strings": ["\n"], "model.response_format": "label",
    "gate.max_perplexity": 5.0,
    "monitoring.thresholds.prediction": 0.3, "monitoring.thresholds.confidence": 0.3,
    "monitoring.thresholds.response_tokens": 0.3, "monitoring.thresholds.empty_response": 0.2,
    "monitoring.thresholds.cut_off": 0.2, "monitoring.thresholds.json_valid": 0.2,
    "monitoring.thresholds.response_labels": 0.3,
    "serving.runtime_min_label_agreement": 0.9, "serving.runtime_confidence_tolerance": 0.05,
    "serving.runtime_check_rows": 100, "serving.runtime_min_answer_agreement": 0.9, "serving.runtime_check_prompts": 50,
    "preference": {"task_config": "x.yaml"}, "language_modeling": {"mlm_probability": 0.2},
}
"""A value other than its default for every setting a family adds."""


def config_with(family: str, setting: str, value) -> dict:
    raw = {section: dict(values) for section, values in BASE[family].items()}
    *parents, name = setting.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return raw


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    return str(err.value)


def test_every_family_setting_is_listed_here_and_the_bases_are_valid():
    settings = {s for family in FAMILIES.values() for s in family.settings()}
    assert settings == set(GIVEN), "a family setting was added or removed: list a non-default value for it here"
    for family, raw in BASE.items():
        assert validate_config(raw).model.task == family


@pytest.mark.parametrize("family", sorted(BASE))
def test_a_setting_of_another_family_is_refused_by_name(family):
    mine = FAMILIES[family].settings()
    for setting, value in GIVEN.items():
        if setting in mine:
            try:
                validate_config(config_with(family, setting, value))
            except ConfigError as exc:  # an own setting may break a rule of the family, never be refused
                assert "does not use this" not in str(exc) and "reads one text column" not in str(exc), setting
        else:  # the base config is valid: the setting is the one problem, and it is named
            message = problems(config_with(family, setting, value))
            assert "1 problem:" in message and setting in message, message


@pytest.mark.parametrize(("family", "setting", "line"), [
    ("causal_lm", "validation.conflicting_labels",
     "validation.conflicting_labels set but model.task is 'causal_lm': the causal_lm family does not use this "
     "setting (it is the classification family's); remove it"),
    ("preference", "validation.min_rows_per_class",
     "validation.min_rows_per_class set but model.task is 'preference': the preference family does not use this "
     "setting (it is the classification family's); remove it"),
    ("language_modeling", "validation.rare_classes",
     "validation.rare_classes set but model.task is 'language_modeling': the language_modeling family does not "
     "use this setting (it is the classification family's); remove it"),
    ("classification", "model.max_new_tokens",
     "model.max_new_tokens set but model.task is 'classification': the classification family does not use this "
     "setting (it is the causal_lm and preference families'); remove it"),
    ("classification", "data.chosen_column",
     "data.chosen_column set but model.task is 'classification': the classification family does not use this "
     "setting (it is the preference family's); remove it"),
    ("preference", "data.response_column",
     "data.response_column set but model.task is 'preference': the preference family does not use this setting "
     "(it is the causal_lm family's); remove it"),
    ("causal_lm", "monitoring.thresholds.prediction",
     "monitoring.thresholds.prediction set but model.task is 'causal_lm': the causal_lm family does not use this "
     "setting (it is the classification family's); remove it"),
    ("classification", "serving.runtime_check_prompts",
     "serving.runtime_check_prompts set but model.task is 'classification': the classification family does not "
     "use this setting (it is the causal_lm and preference families'); remove it"),
    ("language_modeling", "serving.runtime_min_label_agreement",
     "serving.runtime_min_label_agreement set but model.task is 'language_modeling': the language_modeling family "
     "does not use this setting (it is the classification family's); remove it"),
    ("preference", "gate.max_perplexity",
     "gate.max_perplexity set but model.task is 'preference': the preference family does not use this setting (it "
     "is the causal_lm and language_modeling families'); remove it"),
    ("causal_lm", "preference",
     "preference settings given but model.task is 'causal_lm': the causal_lm family does not use this section (it "
     "is the preference family's); remove them or set model.task: preference"),
    ("language_modeling", "data.chosen_column",
     "data.chosen_column set but model.task is 'language_modeling': the language_modeling family does not use "
     "this setting (it is the preference family's); remove it"),
])
def test_the_refusal_names_the_setting_and_whose_it_is(family, setting, line):
    assert f"  - {line}\n" in problems(config_with(family, setting, GIVEN[setting]))


def test_a_family_may_word_its_refusals():
    message = problems(config_with("preference", "data.max_rows_per_label", 5))
    assert "data.max_rows_per_label subset a classifier's labels; remove them with model.task preference" in message
    lm = problems({**BASE["language_modeling"], "data": {"path": "x.csv", "response_column": "r",
                                                        "max_rows_per_label": 3}})
    assert ("data.response_column, data.max_rows_per_label set but model.task language_modeling reads one text "
            "column and no labels; remove them") in lm and "1 problem" in lm


def test_every_refused_setting_and_broken_rule_is_reported_at_once():
    raw = config_with("causal_lm", "validation.conflicting_labels", "drop")
    raw["data"].pop("response_column")
    raw["monitoring"] = {"thresholds": {"prediction": 0.3}}
    raw["serving"] = {"runtime_check_rows": 10, "port": 9000}
    message = problems(raw)
    assert "4 problems" in message, message
    for part in ("needs data.prompt_column and data.response_column", "validation.conflicting_labels set but",
                 "monitoring.thresholds.prediction set but", "serving.runtime_check_rows set but"):
        assert part in message


@pytest.mark.parametrize("family", sorted(BASE))
def test_a_config_written_out_with_every_field_reloads(family):
    """Defaults do not count: tuneops records and reloads configs dumped with every field of every family."""
    cfg = validate_config(BASE[family])
    assert validate_config(cfg.model_dump(mode="json")) == cfg
    assert validate_config(config_with(family, "validation.conflicting_labels", "fail")).model.task == family


def test_the_prefect_form_describes_every_family_setting_where_users_write_it():
    schema_ = TuneopsConfig.model_json_schema()
    defs, top = schema_["$defs"], schema_["properties"]
    for setting in GIVEN:
        *path, name = setting.split(".")
        if not path:
            assert top[name]["description"], setting
            continue
        section = {"data": "DataConfig", "validation": "ValidationSettings", "model": "ModelConfig",
                   "gate": "GateConfig", "serving": "ServingConfig", "monitoring": "DriftThresholds"}[path[0]]
        assert defs[section]["properties"][name]["description"], setting
        assert defs[section]["additionalProperties"] is False
    assert set(defs["GateConfig"]["properties"]["primary_metric"]["enum"]) == {
        m.name for family in FAMILIES.values() for m in family.metrics}


def test_each_family_declares_its_settings_in_its_folder():
    for name, family in FAMILIES.items():
        for classes in family.fields.values():
            for cls in classes:
                assert cls.__module__.startswith("tuneops.families.") and cls.__module__.endswith(".config")
        for section in family.sections.values():
            assert section.model.__module__ == f"tuneops.families.{name}.config"
    assert schema.owners("data.prompt_column") == ["causal_lm", "preference"]
    assert schema.owners("gate.max_perplexity") == ["causal_lm", "language_modeling"]


def test_a_recorded_config_keeps_the_settings_it_ran_with():
    """A version registered before a setting was refused (its training config is read back by monitoring) loads."""
    raw = config_with("causal_lm", "validation.min_rows_per_class", 1)
    assert "validation.min_rows_per_class set but" in problems(raw)
    assert validate_config(raw, recorded=True).validation.min_rows_per_class == 1


def test_typos_in_family_settings_get_the_closest_name_all_at_once():
    message = problems({"data": {"path": "x", "promt_column": "p"}, "model": {"task": "causal_lm", "max_new_token": 3},
                        "serving": {"runtime_check_row": 4}, "preference": {"bta": 1}})
    assert "5 problems" in message
    for line in ("data.promt_column: unknown field (did you mean 'prompt_column'?)",
                 "model.max_new_token: unknown field (did you mean 'max_new_tokens'?)",
                 "serving.runtime_check_row: unknown field (did you mean 'runtime_check_rows'?)",
                 "preference.bta: unknown field (did you mean 'beta'?)", "preference.task_config: required field"):
        assert line in message


def test_a_new_family_s_fields_join_the_sections_it_names():
    """What tuneops.config does with each family folder's FamilyConfig when it is imported."""
    from pydantic import Field

    from tuneops import config
    from tuneops.families.schema import FamilyConfig, Section
    from tuneops.sections import SharedData

    class Speakers(Section):
        speaker_column: str | None = Field(None, description="The column naming who speaks.")

    schema.FAMILIES["toy_speakers"] = FamilyConfig(name="toy_speakers", summary="a test's",
                                                   fields={"data": (Speakers,)})
    try:
        data = config._section("DataConfig", SharedData, "data")
        assert "speaker_column" in data.model_fields and "prompt_column" in data.model_fields
        assert data(path="x", speaker_column="who").speaker_column == "who"
        assert schema.owners("data.speaker_column") == ["toy_speakers"]

        class Clash(Section):
            prompt_column: str | None = None

        schema.FAMILIES["toy_speakers"] = FamilyConfig(name="toy_speakers", summary="a test's",
                                                       fields={"data": (Clash,)})
        with pytest.raises(TypeError, match="data.prompt_column is declared by both PromptColumn and Clash"):
            config._section("DataConfig", SharedData, "data")
    finally:
        schema.FAMILIES.pop("toy_speakers")
