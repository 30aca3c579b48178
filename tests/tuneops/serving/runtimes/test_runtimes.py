"""Every inference runtime loads and predicts with the tiny classifier (and the causal-LM ones generate with the
tiny Llama); what a runtime cannot run is refused with the reason and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LABELS
from tuneops.errors import ConfigError
from tuneops.serving import runtimes
from tuneops.serving.runtimes import RuntimeRefused

TEXTS = ["my card has not arrived", "change my pin please", "what is the exchange rate today", "activate my card",
         "a much longer text about a card that was ordered two weeks ago and still has not arrived at my address"]


@pytest.fixture(scope="module", params=["cls", "mean"])
def tiny_classifier(tiny_model, tmp_path_factory, request) -> str:
    """The tiny BERT with a (random) four-label head, saved as an exported classifier folder, pooled either way
    (model.pooling)."""
    import torch
    from transformers import AutoTokenizer

    from tuneops.families.classification.pooling import classifier_class

    path = tmp_path_factory.mktemp("tiny-classifier")
    torch.manual_seed(0)
    model = classifier_class(request.param).from_pretrained(
        tiny_model, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)})
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("name", list(runtimes.RUNTIMES))
def test_each_runtime_loads_and_predicts_the_tiny_classifier(tiny_classifier, name):
    from tuneops.families.classification.predictor import Classifier

    if runtimes.get(name).unavailable():
        with pytest.raises(RuntimeRefused, match=f"runtime {name} cannot serve this classifier: .*runtime: fp32"):
            Classifier(tiny_classifier, runtime=name)
        return
    reference = Classifier(tiny_classifier, batch_size=2).predict(TEXTS)
    out = Classifier(tiny_classifier, batch_size=2, runtime=name).predict(TEXTS)
    assert set(out.labels) <= set(LABELS) and len(out.labels) == len(TEXTS)
    assert all(0 < c <= 1 for c in out.confidences)
    # Not the agreement check (a random head's probabilities are nearly tied), only that it computes the same model.
    assert out.confidences == pytest.approx(reference.confidences, abs=0.05)


def test_the_onnx_graph_is_exported_once_per_folder(tiny_classifier):
    from tuneops.families.classification.predictor import Classifier
    from tuneops.serving.runtimes.onnx import ONNX_DIR

    graph = Path(tiny_classifier) / ONNX_DIR / "model.onnx"
    Classifier(tiny_classifier, runtime="onnx")
    stamp = graph.stat().st_mtime_ns
    Classifier(tiny_classifier, runtime="onnx")
    assert graph.stat().st_mtime_ns == stamp


def test_unknown_runtimes_and_unsupported_ones_are_refused(tiny_causal_lm, monkeypatch):
    from tuneops.config import ServingConfig
    from tuneops.families.causal_lm.generation import GenerationSettings, Generator

    with pytest.raises(ConfigError, match="unknown runtime 'int9'; known: .*int8"):
        runtimes.get("int9")
    with pytest.raises(ValueError, match="did you mean 'int8'"):
        ServingConfig(runtime="int9")
    settings = GenerationSettings("### Instruction:\n{prompt}\n### Response:\n", 48, 4)
    with pytest.raises(RuntimeRefused, match="ONNX is not supported for causal_lm.*use fp32, int8 or bf16"):
        Generator(tiny_causal_lm, settings=settings, runtime="onnx")
    # A CPU without bf16 instructions: refused, naming the flags it looked for.
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr("tuneops.serving.runtimes.bf16.cpu_flags", lambda: {"avx2"})
    with pytest.raises(RuntimeRefused, match="avx512_bf16.*/proc/cpuinfo.*serving.runtime: fp32"):
        runtimes.usable("bf16", "classifier", for_generation=False)


@pytest.mark.parametrize("name", ["int8", "bf16"])
def test_causal_lm_runtimes_generate(tiny_causal_lm, name):
    from tuneops.families.causal_lm.generation import GenerationSettings, Generator

    if runtimes.get(name).unavailable():
        pytest.skip(f"{name}: {runtimes.get(name).unavailable()}")
    settings = GenerationSettings("### Instruction:\n{prompt}\n### Response:\n", 48, 4)
    out = Generator(tiny_causal_lm, settings=settings, runtime=name).generate_details(["Which intent: my card"] * 2)
    assert len(out) == 2 and all(0 < g.response_tokens <= 4 for g in out)
    assert out[0].response == out[1].response  # greedy: the same prompt, the same answer
