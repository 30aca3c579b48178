"""The train_model flow for the language_modeling family, on a real temporary Prefect server and SQLite MLflow.

A tiny BERT (random weights, no masked-LM head: like the packaged MiniLM) learns masked-language modelling
and a tiny Llama causal-LM on unlabelled BANKING77 texts, with the test split of a supervised config kept
out of the corpus; a classifier then starts from the registered encoder through ``models:/NAME@champion``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import LABELS, ROOT, tiny_config
from tuneops.config import validate_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str]:
    """Unlabelled texts (the corpus) and a supervised config over a labelled slice of the same texts."""
    folder = tmp_path_factory.mktemp("lm")
    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    labelled = df[df.category.isin(LABELS)].groupby("category").head(40)
    labelled.to_csv(folder / "labelled.csv", index=False)
    pd.concat([df.groupby("category").head(8), labelled]).drop_duplicates()[["text"]].to_csv(folder / "corpus.csv",
                                                                                              index=False)
    (folder / "classifier.yaml").write_text(yaml.safe_dump({"data": {"path": str(folder / "labelled.csv"),
                                                                     "label_column": "category"}}))
    return str(folder / "corpus.csv"), str(folder / "classifier.yaml")


def lm_config(data_path: str, base: str, name: str, supervised: str, **training):
    return validate_config({
        "data": {"path": data_path},
        "validation": {"min_rows": 100},
        "split": {"salt": "lm-tests"},
        "model": {"base": base, "task": "language_modeling", "max_length": 32},
        "language_modeling": {"exclude_test_of": [supervised]},
        "training": {"method": "full", "epochs": 2, "learning_rate": 0.003, "batch_size": 16, "seed": 7,
                     "warmup_ratio": 0.0, **training},
        "registry": {"model_name": name, "experiment": "tests"},
    })


@pytest.fixture(scope="module")
def adapted_encoder(prefect_server, tiny_model, corpus):
    from tuneops.flows.train_model import train_model

    return train_model(config=lm_config(corpus[0], tiny_model, "lm-encoder", corpus[1]))


def test_an_encoder_learns_masked_lm_and_is_registered(adapted_encoder, corpus):
    outcome = adapted_encoder
    assert outcome.registration.version == "1" and outcome.registration.promoted, outcome.decision.reason
    run = MlflowClient().get_run(outcome.run_id)
    baseline = run.data.metrics["baseline_test_perplexity"]
    # It learnt the domain: the held-out pseudo-perplexity fell far below the base's (random head) on the same masks.
    assert outcome.test_metrics["perplexity"] < 0.5 * baseline, (outcome.test_metrics, baseline)
    assert "over the baseline (base model before adaptation" in outcome.decision.reason
    mv = MlflowClient().get_model_version("lm-encoder", "1")
    assert mv.tags["tuneops.task"] == "language_modeling" and mv.tags["tuneops.data.path"] == corpus[0]
    assert float(mv.tags["tuneops.metric.test_perplexity"]) == pytest.approx(outcome.test_metrics["perplexity"])
    # The supervised test texts were kept out of every split, and the card says how many.
    from tuneops.config import load_config
    from tuneops.data.splits import normalise
    from tuneops.families.language_modeling import supervised_test_texts

    held_out = supervised_test_texts(corpus[1])
    assert len(held_out) > 10
    for split in ("train", "validation", "test"):
        texts = pd.read_parquet(MlflowClient().download_artifacts(outcome.run_id, f"splits/{split}.parquet")).text
        assert not set(normalise(texts)) & held_out, f"a supervised test text is in the {split} split"
    corpus_rows = len(pd.read_csv(corpus[0]))
    kept = sum(int(run.data.params[f"split.{s}.rows"]) for s in ("train", "validation", "test"))
    assert load_config(corpus[1]) and f"{corpus_rows - kept} corpus rows that are test texts" in mv.description
    assert "masked-LM head" in mv.description and "models:/lm-encoder@champion" in mv.description
    report = Path(MlflowClient().download_artifacts(outcome.run_id, "validation/report.md")).read_text()
    assert f"{corpus_rows - kept} corpus rows are test texts of a supervised config" in report


def test_the_registered_encoder_scores_texts(adapted_encoder):
    model = mlflow.pyfunc.load_model("models:/lm-encoder/1")
    out = model.predict(pd.DataFrame({"text": ["my card has not arrived yet", "zebra quantum lattice"]}))
    assert list(out.columns) == ["log_likelihood", "perplexity", "tokens"] and (out.tokens >= 1).all()
    assert out.log_likelihood.iloc[0] > out.log_likelihood.iloc[1]  # banking text is likelier than nonsense
    again = model.predict(pd.DataFrame({"text": ["zebra quantum lattice", "my card has not arrived yet"]}))
    assert again.log_likelihood.iloc[1] == pytest.approx(out.log_likelihood.iloc[0], abs=1e-4)  # fixed masks


def test_a_classifier_starts_from_the_adapted_encoder(adapted_encoder, company_csv, tiny_model):
    """models:/NAME@champion as a classifier's base: its backbone is the adapted encoder's, its head new, and its
    provenance names the parent version."""
    import torch
    from transformers import AutoModel

    from tuneops.flows.train_model import train_model
    from tuneops.training.base_models import resolve

    outcome = train_model(config=tiny_config(company_csv, "models:/lm-encoder@champion", "lm-classifier",
                                             training={"epochs": 1}))
    mv = MlflowClient().get_model_version("lm-classifier", outcome.registration.version)
    assert mv.tags["tuneops.base_model"] == "models:/lm-encoder@champion"
    assert mv.tags["tuneops.base_model.registered"] == "lm-encoder/1"
    assert mv.tags["tuneops.base_model.run_id"] == adapted_encoder.run_id
    # The classifier's embeddings began as the adapted encoder's: a test that fails if it started from scratch.
    from transformers import AutoModelForSequenceClassification

    parent = AutoModel.from_pretrained(resolve("models:/lm-encoder@champion"))
    untrained = AutoModel.from_pretrained(tiny_model)
    assert not torch.equal(parent.encoder.layer[0].attention.self.query.weight,
                           untrained.encoder.layer[0].attention.self.query.weight)  # adaptation moved the encoder
    start = AutoModelForSequenceClassification.from_pretrained(resolve("models:/lm-encoder@champion"), num_labels=4)
    assert torch.equal(start.bert.embeddings.word_embeddings.weight, parent.embeddings.word_embeddings.weight)
    assert torch.equal(start.bert.encoder.layer[0].attention.self.query.weight,
                       parent.encoder.layer[0].attention.self.query.weight)
    assert outcome.test_metrics["accuracy"] > 0.25


def test_a_decoder_learns_causal_lm(prefect_server, tiny_causal_lm, corpus):
    from tuneops.flows.train_model import train_model

    outcome = train_model(config=lm_config(corpus[0], tiny_causal_lm, "lm-decoder", corpus[1]))
    assert outcome.registration.promoted, outcome.decision.reason
    run = MlflowClient().get_run(outcome.run_id)
    assert outcome.test_metrics["perplexity"] < 0.5 * run.data.metrics["baseline_test_perplexity"]
    assert Path(resolve_folder("lm-decoder")).joinpath("tuneops_language_model.json").read_text().count('"clm"') == 1
    out = mlflow.pyfunc.load_model("models:/lm-decoder/1").predict(pd.DataFrame({"text": ["I lost my card"]}))
    assert out.tokens.iloc[0] >= 3 and out.perplexity.iloc[0] > 1


def resolve_folder(name: str) -> str:
    from tuneops.training.base_models import resolve

    return resolve(f"models:/{name}@champion")
