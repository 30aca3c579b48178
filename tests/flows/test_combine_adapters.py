"""Two LoRA adapters trained on different halves of the company data, combined with PEFT's weighted
combination into one candidate that is evaluated, gated and registered like a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import LABELS, MINILM, tiny_config
from tuneops.errors import TrainingError

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BASE = MINILM
LORA = {"method": "lora", "epochs": 2, "learning_rate": 0.01, "batch_size": 16,
        "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}}


def _cfg(path: str, name: str):
    return tiny_config(path, BASE, name, training=LORA, model={"base": BASE, "max_length": 24})


def test_combined_adapters_are_gated_and_registered(prefect_server, company_csv, tmp_path):
    from tuneops.flows.combine_adapters import combine_adapters
    from tuneops.flows.train_model import train_model

    frame = pd.read_csv(company_csv)
    halves = [tmp_path / "first.csv", tmp_path / "second.csv"]
    frame.iloc[::2].to_csv(halves[0], index=False)
    frame.iloc[1::2].to_csv(halves[1], index=False)
    for path, name in zip(halves, ("combine-a", "combine-b"), strict=True):
        assert train_model(config=_cfg(str(path), name)).registration.version == "1"

    outcome = combine_adapters(config=_cfg(company_csv, "combined"), sources=["combine-a/1", "combine-b@champion"],
                               weights=[0.5, 0.5])
    assert outcome.test_metrics["accuracy"] >= 0.6, outcome.test_metrics  # four intents: chance is 0.25
    assert outcome.decision.checks and outcome.registration.version == "1"
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.params["combine.sources"] == "combine-a/1,combine-b@champion"
    model = mlflow.pyfunc.load_model("models:/combined/1")
    out = model.predict(pd.DataFrame({"text": ["where is my new card? it has not arrived"]}))
    assert out["label"].iloc[0] in LABELS
    # Sources and result are adapter-only: the combined adapter (the sources' ranks side by side) on the pinned base.
    exported = Path(mlflow.artifacts.download_artifacts("models:/combined/1"))
    model_dir = next(exported.rglob("tuneops_base.json")).parent
    assert not (model_dir / "model.safetensors").exists() and not (model_dir / "base").exists()
    assert json.loads((model_dir / "adapter" / "adapter_config.json").read_text())["r"] == 8


def test_combining_a_non_lora_model_is_refused(prefect_server, tiny_model, company_csv):
    from tuneops.flows.combine_adapters import combine_adapters
    from tuneops.flows.train_model import train_model

    train_model(config=tiny_config(company_csv, tiny_model, "combine-full"))
    with pytest.raises(TrainingError, match="only LoRA adapters can be combined"):
        combine_adapters(config=tiny_config(company_csv, tiny_model, "combined-bad"),
                         sources=["combine-full/1", "combine-full/1"], weights=[1.0, 1.0])
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_registered_model("combined-bad")


def test_mean_pooled_sources_combine_under_their_own_pooling_only(prefect_server, tiny_model, company_csv):
    from tuneops.flows.combine_adapters import combine_adapters
    from tuneops.flows.train_model import train_model

    def cfg(name: str, pooling: str):
        return tiny_config(company_csv, tiny_model, name, training=LORA,
                           model={"base": tiny_model, "max_length": 24, "pooling": pooling})

    train_model(config=cfg("combine-mean", "mean"))
    with pytest.raises(TrainingError, match="trained with model.pooling: mean, this config has model.pooling: cls"):
        combine_adapters(config=cfg("combined-cls", "cls"), sources=["combine-mean/1", "combine-mean/1"],
                         weights=[1.0, 1.0])
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_registered_model("combined-cls")
    outcome = combine_adapters(config=cfg("combined-mean", "mean"), sources=["combine-mean/1", "combine-mean/1"],
                               weights=[1.0, 1.0])
    assert outcome.registration.version == "1"
    exported = Path(mlflow.artifacts.download_artifacts("models:/combined-mean/1"))
    assert json.loads(next(exported.rglob("config.json")).read_text())["model_type"] == "tuneops-bert-mean"
    model = mlflow.pyfunc.load_model("models:/combined-mean/1")
    out = model.predict(pd.DataFrame({"text": ["where is my new card? it has not arrived"]}))
    assert out["label"].iloc[0] in LABELS
