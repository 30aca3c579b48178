"""Mean pooling (model.pooling: mean): the mean of the real tokens' states, the base encoder's weights, an export
that reloads through the Auto class only where tuneops is imported, and a clear refusal where it cannot apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LABELS, tiny_config
from tuneops.errors import ConfigError


@pytest.fixture(scope="module")
def mean_pooled(tiny_model, tmp_path_factory) -> str:
    import torch
    from transformers import AutoTokenizer

    from tuneops.families.classification.pooling import MeanPoolingClassifier

    path = tmp_path_factory.mktemp("mean-pooled")
    torch.manual_seed(0)
    model = MeanPoolingClassifier.from_pretrained(tiny_model, num_labels=len(LABELS),
                                                  id2label=dict(enumerate(LABELS)))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


def test_the_mean_covers_the_real_tokens_only(mean_pooled):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(mean_pooled).eval()
    tokenizer = AutoTokenizer.from_pretrained(mean_pooled)
    short, long = "my card", "my card has still not arrived after two weeks of waiting"
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[0]
        enc = tokenizer([short], return_tensors="pt")
        states = model.bert(**enc).last_hidden_state[0]
        by_hand = model.classifier(states.mean(0))
    assert torch.allclose(alone, padded, atol=1e-5)  # padding changes nothing
    assert torch.allclose(alone, by_hand, atol=1e-5)  # it is the plain mean of the text's token states


def test_the_encoder_starts_from_the_base_weights(tiny_model, mean_pooled):
    import torch
    from transformers import AutoModelForSequenceClassification, BertModel

    base = BertModel.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(mean_pooled)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight)
    assert not hasattr(model.bert, "pooler") or model.bert.pooler is None  # no untrained [CLS] pooler


def test_the_export_names_its_own_model_type_so_plain_transformers_refuses_it(mean_pooled):
    config = json.loads((Path(mean_pooled) / "config.json").read_text())
    assert config["model_type"] == "tuneops-bert-mean"
    assert config["architectures"] == ["MeanPoolingClassifier"]
    # Without tuneops imported, transformers does not know the type: a loud failure, not a [CLS]-pooled model.
    code = ("import sys; from transformers import AutoModelForSequenceClassification as A\n"
            "try: A.from_pretrained(sys.argv[1])\n"
            "except (ValueError, KeyError) as e: print('refused:', e); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code, mean_pooled], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "tuneops-bert-mean" in out.stdout


def test_the_classifier_loads_and_predicts_it(mean_pooled):
    from tuneops.families.classification.predictor import Classifier

    out = Classifier(mean_pooled, batch_size=2).predict(["my card has not arrived", "change my pin", "rate?"])
    assert len(out.labels) == 3 and set(out.labels) <= set(LABELS)


def test_pooling_is_refused_where_it_cannot_apply(tiny_model, tiny_causal_lm, company_csv):
    from tuneops.training.base_models import preflight

    with pytest.raises(ConfigError, match="pooling: mean applies to task 'classification' only"):
        tiny_config(company_csv, tiny_model, "p", model={"base": tiny_model, "pooling": "mean", "task": "causal_lm"})
    with pytest.raises(ConfigError, match=r"model.pooling: mean is built for BERT-family encoders .* a 'llama' "
                                          r"model\. Set model.pooling: cls"):
        preflight(tiny_causal_lm, "classification", "mean")
    assert preflight(tiny_model, "classification", "mean") == tiny_model


def test_the_preflight_knows_the_mean_pooled_type():
    from tuneops.families.classification.pooling import MODEL_TYPE
    from tuneops.training.base_models import MEAN_POOLABLE

    assert MODEL_TYPE in MEAN_POOLABLE  # a mean-pooled champion can be the base of the next run


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_mean_pooling_trains_and_serves_with_the_virtual_token_methods(method, tiny_model, company_csv, tmp_path):
    # Prefix tuning lengthens the attention mask (its virtual keys) but not the hidden states, prompt tuning
    # lengthens both: the mean must still cover the real tokens, whatever the padding.
    import pandas as pd

    from tuneops.data.splits import split_frame
    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.trainer import train

    cfg = tiny_config(company_csv, tiny_model, f"mean-{method}", model={"base": tiny_model, "max_length": 32,
                                                                        "pooling": "mean"},
                      training={"method": method, "epochs": 2, "learning_rate": 0.01})
    splits = split_frame(pd.read_csv(company_csv), cfg.split_data(), cfg.split, tmp_path / "splits")
    result = train(cfg, splits, tmp_path / "out")  # the export is re-scored on validation inside: it must match
    assert result is not None and result.adapter["adapter_tensors_trained"] > 0
    model = Classifier(result.model_dir, max_length=32, batch_size=2)
    short, long = "my card", "my card has still not arrived after two weeks of waiting for it"
    alone = model.predict([short])
    padded = model.predict([short, long])
    assert padded.labels[0] == alone.labels[0]
    assert padded.confidences[0] == pytest.approx(alone.confidences[0], abs=1e-5)
