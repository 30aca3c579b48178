"""A mean-pooled classifier goes through the whole flow: trained, its export reloaded and re-scored, registered,
and served by the registered pyfunc."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from tests.conftest import LABELS, tiny_config


def test_mean_pooling_trains_registers_and_serves(prefect_server, company_csv, tiny_model):
    from tuneops.flows.train_model import train_model

    name = "pooling-mean"
    cfg = tiny_config(company_csv, tiny_model, name, model={"base": tiny_model, "max_length": 32, "pooling": "mean"})
    outcome = train_model(config=cfg)

    assert outcome.registration is not None and outcome.registration.version
    mv = MlflowClient().get_model_version(name, outcome.registration.version)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}"))
    config = json.loads(next(p for p in local.rglob("config.json") if p.parent.name == "model").read_text())
    assert config["model_type"] == "tuneops-bert-mean"
    out = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}").predict(
        pd.DataFrame({"text": ["I still have not received my new card", "how do I change my pin"]}))
    assert set(out["label"]) <= set(LABELS) and out["confidence"].between(0, 1).all()
