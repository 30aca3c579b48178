import subprocess
import sys
from pathlib import Path

import pytest

from tuneops.config import TuneopsConfig, load_config, validate_config
from tuneops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(path)
    assert isinstance(cfg, TuneopsConfig)
    if "${TUNEOPS_HOME}" in path.read_text().split("path:", 1)[1].splitlines()[0]:
        # Data that tuneops itself writes into the working folder (the preference pairs of `tuneops pairs`):
        # absent from a clone by design; what it is built from must be there.
        assert cfg.preference is not None and Path(cfg.preference.task_config).is_file(), path.name
    else:
        for data in cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]:
            assert Path(data).exists(), f"{path.name} points at missing data {data}"
    for listed in cfg.language_modeling.exclude_test_of if cfg.language_modeling else []:
        assert Path(listed).is_file(), f"{path.name} excludes the test split of a missing config {listed}"


def test_shipped_configs_include_the_demo_and_full():
    assert {"banking77_lora.yaml", "banking77_full.yaml"} <= {p.name for p in SHIPPED}


def test_every_field_is_described():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            ann = field.annotation
            for sub in getattr(ann, "__args__", (ann,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub, f"{prefix}{name}.")

    walk(TuneopsConfig)


def test_overrides_apply_with_yaml_types():
    cfg = load_config(ROOT / "configs/banking77_lora.yaml", ["training.epochs=2", "training.lora.r=4",
                                                             "gate.auto_promote=false"])
    assert cfg.training.epochs == 2 and cfg.training.lora.r == 4 and cfg.gate.auto_promote is False


def test_all_problems_reported_at_once():
    raw = {"data": {"path": "x.csv", "txt_column": "t"},
           "model": {"max_length": "long"},
           "training": {"method": "full", "lora": {"r": 4}},
           "split": {"validation_ratio": 0.5, "test_ratio": 0.6},
           "gate": {"floors": {"acuracy": 0.5}}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    msg = str(err.value)
    assert "data.txt_column: unknown field (did you mean 'text_column'?)" in msg
    assert "model.max_length" in msg and "'long'" in msg
    assert "lora settings are given but method is 'full'" in msg
    assert "leaves no training data" in msg
    assert "unknown metric 'acuracy'" in msg
    assert "5 problems" in msg


def test_contradictory_text_bounds():
    with pytest.raises(ConfigError, match="min_text_chars .* greater than max_text_chars"):
        validate_config({"data": {"path": "x"}, "validation": {"min_text_chars": 10, "max_text_chars": 5}})


def test_selected_labels_must_be_allowed():
    with pytest.raises(ConfigError, match="outside validation.allowed_labels: c"):
        validate_config({"data": {"path": "x", "select_labels": ["a", "c"]},
                         "validation": {"allowed_labels": ["a", "b"]}})


def test_lora_defaults_filled_for_lora_method():
    cfg = validate_config({"data": {"path": "x"}, "training": {"method": "lora"}})
    assert cfg.training.lora is not None and cfg.training.lora.r == 16


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(ROOT / "configs/banking77_lora.yaml", ["training.epochs"])


def test_config_fingerprint_changes_with_content():
    a = validate_config({"data": {"path": "x"}})
    b = validate_config({"data": {"path": "x"}, "training": {"epochs": 4}})
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == validate_config({"data": {"path": "x"}}).fingerprint()


def test_cli_bad_config_exits_2_listing_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: x.csv\n  labl_column: y\ntraining:\n  epochs: -1\n  batch_size: big\n")
    proc = subprocess.run([sys.executable, "-m", "tuneops.cli", "train", str(bad)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "3 problems" in proc.stderr
    for field in ("data.labl_column", "training.epochs", "training.batch_size"):
        assert field in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_missing_config_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tuneops.cli", "train", "nope.yaml"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_invalid_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "tuneops.cli", "train", str(bad)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_knob_in_shipped_configs_is_commented(path):
    import re

    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        match = re.match(r"^\s*(\w+):\s*(\S.*)?$", line)
        if match and match.group(2) and not match.group(2).startswith("#"):
            above = lines[number - 2].strip() if number > 1 else ""
            assert "#" in line or above.startswith("#"), f"{path.name}:{number} '{match.group(1)}' has no comment"


def test_a_minimal_classifier_config_gets_the_family_training_defaults_and_a_set_key_wins():
    from tuneops.config import validate_config
    from tuneops.families import FAMILIES

    data = {"path": "data/banking77/train.csv", "text_column": "text", "label_column": "category"}
    defaults = FAMILIES["classification"].training_defaults
    t = validate_config({"data": data, "registry": {"model_name": "x"}}).training
    assert t.method == defaults["*"]["method"] == "full"
    assert (t.epochs, t.early_stopping_patience, t.label_smoothing) == (10, 2, 0.1)
    assert (t.learning_rate, t.head_learning_rate, t.layer_lr_decay) == (1e-4, 3e-3, 0.9)
    # naming another method (or giving its settings) takes that method's defaults, not full's
    lora = validate_config({"data": data, "registry": {"model_name": "x"}, "training": {"lora": {"r": 8}}}).training
    assert (lora.method, lora.learning_rate, lora.head_learning_rate, lora.lora.r) == ("lora", 2e-3, None, 8)
    # a key the config sets wins, null included
    own = validate_config({"data": data, "registry": {"model_name": "x"},
                           "training": {"epochs": 3, "label_smoothing": 0.0, "head_learning_rate": None}}).training
    assert (own.method, own.epochs, own.label_smoothing, own.head_learning_rate) == ("full", 3, 0.0, None)
    # other families keep the schema's defaults
    causal = validate_config({"data": {"path": "data/nlupp/banking.jsonl", "prompt_column": "text",
                                       "response_column": "intents"}, "model": {"task": "causal_lm", "base": "x"},
                              "registry": {"model_name": "x"}}).training
    assert (causal.method, causal.epochs, causal.label_smoothing) == ("lora", 3, 0.0)


def _key(raw):
    from tuneops.data.splits import SplitResult
    from tuneops.training.trainer import checkpoint_key

    splits = SplitResult(paths={}, sizes={}, fingerprints={"train": "a1", "validation": "b2", "test": "c3"},
                         class_counts={})
    return checkpoint_key(validate_config(raw), splits)


def _with(raw, dotted, value):
    import copy

    raw = copy.deepcopy(raw)
    *parents, name = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return raw


BASE = {"data": {"path": "data/banking77/train.csv", "label_column": "category"}}


@pytest.mark.parametrize(("setting", "value"), [
    ("serving.port", 9090), ("serving.runtime", "int8"), ("serving.runtime_min_label_agreement", 0.9),
    ("monitoring.window_hours", 6), ("monitoring.thresholds.text", 0.7), ("gate.max_regression", 0.05),
    ("gate.floors", {"accuracy": 0.5}), ("gate.auto_promote", False), ("registry.model_name", "other"),
    ("training.checkpoint_uri", "s3://bucket/checkpoints"), ("training.distributed.timeout_minutes", 600),
    ("training.export_tolerance", 0.01), ("validation.duplicates", "fail"),
])
def test_the_resume_key_ignores_what_does_not_shape_training(setting, value):
    assert _key(_with(BASE, setting, value)) == _key(BASE)


@pytest.mark.parametrize(("setting", "value"), [
    ("training.learning_rate", 0.003), ("training.epochs", 4), ("training.seed", 1), ("model.max_length", 32),
    ("model.pooling", "mean"), ("data.text_column", "query"), ("split.salt", "other"),
    ("gate.primary_metric", "macro_f1"),  # it selects the best epoch
])
def test_the_resume_key_follows_what_shapes_training(setting, value):
    assert _key(_with(BASE, setting, value)) != _key(BASE)


def test_the_resume_key_follows_the_family_sections_and_the_split_files():
    from tuneops.data.splits import SplitResult
    from tuneops.training.trainer import checkpoint_key

    dpo = {"data": {"path": "x.jsonl", "prompt_column": "p", "chosen_column": "c", "rejected_column": "r"},
           "model": {"task": "preference"}, "preference": {"task_config": "configs/nlupp_intents_llm.yaml"}}
    assert _key(_with(dpo, "preference.beta", 0.5)) != _key(dpo)
    assert _key(_with(dpo, "model.system_prompt", "Answer.")) != _key(dpo)  # how prompts are shown in training
    assert _key(_with(dpo, "model.max_new_tokens", 64)) == _key(dpo)  # how evaluation generates
    assert _key(_with(dpo, "preference.task_config", "configs/banking77_instruct.yaml")) == _key(dpo)
    lm = {"data": {"path": "x.csv"}, "model": {"task": "language_modeling"}}
    assert _key(_with(lm, "language_modeling", {"mlm_probability": 0.3})) != _key(lm)
    cfg = validate_config(BASE)
    other = SplitResult(paths={}, sizes={}, fingerprints={"train": "a1", "validation": "b2", "test": "zz"},
                        class_counts={})
    assert checkpoint_key(cfg, other) != _key(BASE)
