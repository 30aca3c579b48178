"""Bottleneck adapters on the tiny BERT classifier and the tiny Llama: identity at init, only adapters (and the
head) train, Houlsby vs Pfeiffer placement, and the PEFT-layout save / load round trip."""

from __future__ import annotations

import json

import pytest

from tuneops.errors import ConfigError
from tuneops.methods import bottleneck, get
from tuneops.methods.bottleneck import BottleneckSettings

TEXTS = ["my card has not arrived yet", "how do I change my pin", "what exchange rate do you use"]


def _classifier(path: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=4).eval()


def _causal(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _batch(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


def _logits(model, batch):
    import torch

    with torch.inference_mode():
        return model(**batch).logits


def _adapted(model):
    return [n for n, m in model.named_modules() if hasattr(m, bottleneck.ADAPTER)]


@pytest.mark.parametrize("family", ["classifier", "causal"])
def test_adapters_start_as_the_base_model_and_only_they_and_the_head_train(family, tiny_model, tiny_causal_lm):
    import torch

    path, load, task = ((tiny_model, _classifier, "SEQ_CLS") if family == "classifier"
                        else (tiny_causal_lm, _causal, "CAUSAL_LM"))
    batch = _batch(path)
    expected = _logits(load(path), batch)
    model = bottleneck.insert(load(path), BottleneckSettings(), task).eval()
    assert torch.equal(_logits(model, batch), expected)  # up-projections at zero: exactly the base model
    near = bottleneck.insert(load(path), BottleneckSettings(init_scale=1e-3), task).eval()
    drift = (_logits(near, batch) - expected).abs().max()
    assert 0 < drift < 1e-2  # near-zero init: near the base, not equal to it

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if bottleneck.is_adapter(n)}
    heads = trainable - adapters
    assert adapters and all(".bottleneck.down." in n or ".bottleneck.up." in n for n in adapters)
    assert heads == ({"classifier.weight", "classifier.bias"} if family == "classifier" else set())
    # The base's own parameter names are untouched, so its checkpoint still loads as it is.
    assert {n for n, _ in load(path).named_parameters()} == {n for n, _ in model.named_parameters()} - adapters


def test_houlsby_adapts_attention_and_feed_forward_pfeiffer_only_the_feed_forward(tiny_model, tiny_causal_lm):
    bert_h = _adapted(bottleneck.insert(_classifier(tiny_model), BottleneckSettings(placement="houlsby"), "SEQ_CLS"))
    bert_p = _adapted(bottleneck.insert(_classifier(tiny_model), BottleneckSettings(placement="pfeiffer"), "SEQ_CLS"))
    # Two layers: BERT's attention.output.dense and (feed-forward) output.dense, before residual + LayerNorm.
    assert sorted(bert_h) == sorted([f"bert.encoder.layer.{i}.{m}" for i in range(2)
                                     for m in ("attention.output.dense", "output.dense")])
    assert bert_p == [f"bert.encoder.layer.{i}.output.dense" for i in range(2)]
    llama_h = _adapted(bottleneck.insert(_causal(tiny_causal_lm), BottleneckSettings(), "CAUSAL_LM"))
    llama_p = _adapted(bottleneck.insert(_causal(tiny_causal_lm), BottleneckSettings(placement="pfeiffer"),
                                         "CAUSAL_LM"))
    assert sorted(llama_h) == sorted([f"model.layers.{i}.{m}" for i in range(2)
                                      for m in ("self_attn.o_proj", "mlp.down_proj")])
    assert llama_p == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    # hidden 64 / reduction_factor 16 = a bottleneck of 4: down 64x4 + 4, up 4x64 + 64 per adapter.
    model = bottleneck.insert(_causal(tiny_causal_lm), BottleneckSettings(), "CAUSAL_LM")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * (64 * 4 + 4 + 4 * 64 + 64)


def test_saved_adapter_is_peft_layout_with_only_adapter_weights_and_reloads_to_the_same_outputs(
        tiny_model, tiny_causal_lm, tmp_path):
    import torch
    from safetensors.torch import load_file

    method = get("bottleneck")
    assert not method.mergeable
    for path, load, task in ((tiny_model, _classifier, "SEQ_CLS"), (tiny_causal_lm, _causal, "CAUSAL_LM")):
        folder = tmp_path / task
        model = bottleneck.insert(load(path), BottleneckSettings(non_linearity="gelu", reduction_factor=8), task)
        with torch.no_grad():  # stands in for training: every trainable weight moves
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.1)
        model.eval()
        batch = _batch(path)
        trained = _logits(model, batch)
        method.save(model, folder)

        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "BOTTLENECK" and config["task_type"] == task
        assert config["placement"] == "houlsby" and config["reduction_factor"] == 8
        assert config["non_linearity"] == "gelu" and config["base_model_name_or_path"] == path
        assert config["target_modules"] == _adapted(model)
        saved = load_file(str(folder / "adapter_model.safetensors"))
        trainable = {f"base_model.model.{n}" for n, p in model.named_parameters() if p.requires_grad}
        assert set(saved) == trainable  # only the adapters (and the head), named as PEFT names them

        reloaded = method.load(load(path), folder)
        assert torch.allclose(_logits(reloaded, batch), trained, atol=1e-6)
        assert not torch.allclose(_logits(load(path), batch), trained, atol=1e-3)  # the adapter is what differs


def test_a_base_without_the_configured_modules_is_refused_with_the_fix(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"no module of the base model \(BertForSequenceClassification\) matches "
                       r"feedforward_modules \['mlp\\\\.fc_out'\].*set training.bottleneck.feedforward_modules"):
        bottleneck.insert(_classifier(tiny_model), BottleneckSettings(placement="pfeiffer",
                                                                      feedforward_modules=[r"mlp\.fc_out"]), "SEQ_CLS")
    with pytest.raises(ConfigError, match="reduction_factor 128 leaves no bottleneck .* of width 64"):
        bottleneck.insert(_classifier(tiny_model), BottleneckSettings(reduction_factor=128), "SEQ_CLS")
    with pytest.raises(ValueError, match=r"'mlp\\\.\(' is not a regular expression"):
        BottleneckSettings(feedforward_modules=[r"mlp\.("])

    # An adapter does not load onto a base it does not fit (here: a head for 3 labels instead of 4).
    from transformers import AutoModelForSequenceClassification

    bottleneck.save(bottleneck.insert(_classifier(tiny_model), BottleneckSettings(), "SEQ_CLS"), tmp_path / "a")
    other = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    with pytest.raises(ConfigError, match="does not fit this base model.*load it onto the base model it was trained"):
        bottleneck.load(other, tmp_path / "a")


def test_the_config_schema_and_the_adapter_config_carry_the_method(tmp_path):
    from tests.conftest import ROOT
    from tuneops.config import TuneopsConfig, load_config, validate_config

    cfg = load_config(ROOT / "configs/banking77_adapter.yaml")
    assert cfg.training.method == "bottleneck" and cfg.training.lora is None
    assert cfg.training.method_settings() == BottleneckSettings(placement="houlsby", reduction_factor=16)
    # The typed form (Prefect's run form is this JSON schema) offers the method with every setting described.
    schema = TuneopsConfig.model_json_schema()
    settings = schema["$defs"]["BottleneckSettings"]["properties"]
    assert {"placement", "reduction_factor", "non_linearity", "init_scale", "dropout", "attention_modules",
            "feedforward_modules", "head_modules"} == set(settings)
    assert all(field.get("description") for field in settings.values())
    assert "'bottleneck' bottleneck adapter layers" in schema["$defs"]["TrainingConfig"]["properties"]["method"][
        "description"]
    # Wrong values are reported together, each with its field named.
    with pytest.raises(ConfigError) as failure:
        validate_config({"data": {"path": "x"}, "training": {"method": "bottleneck", "bottleneck": {
            "placement": "everywhere", "reduction_factor": 0, "non_linearity": "softmax"}}})
    message = str(failure.value)
    for field in ("bottleneck.placement", "bottleneck.reduction_factor", "bottleneck.non_linearity"):
        assert f"training.{field}" in message, message


@pytest.mark.parametrize("family", ["gpt2", "opt", "distilbert", "falcon", "qwen2", "roberta"])
def test_default_patterns_find_both_insertion_points_of_other_architectures(family):
    """The defaults place one attention and one feed-forward adapter per layer in the other common families too."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    small = {"gpt2": dict(n_embd=32, n_layer=2, n_head=2), "opt": dict(hidden_size=32, num_hidden_layers=2,
             num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32), "distilbert": dict(dim=32, n_layers=2,
             n_heads=2, hidden_dim=64), "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
             "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             intermediate_size=64), "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64)}[family]
    config = AutoConfig.for_model(family, vocab_size=100, **small)
    encoder = family in ("distilbert", "roberta")
    with torch.device("meta"):
        model = (AutoModelForSequenceClassification if encoder else AutoModelForCausalLM).from_config(config)
    task = "SEQ_CLS" if encoder else "CAUSAL_LM"
    houlsby = _adapted(bottleneck.insert(model, BottleneckSettings(reduction_factor=4), task))
    assert len(houlsby) == 4, houlsby
    with torch.device("meta"):
        model = (AutoModelForSequenceClassification if encoder else AutoModelForCausalLM).from_config(config)
    assert len(_adapted(bottleneck.insert(model, BottleneckSettings(placement="pfeiffer", reduction_factor=4),
                                          task))) == 2
