"""Bottleneck adapters through the real flow, for both task families: a classifier that `tuneops predict` and
`mlflow models serve` answer with, and a causal LM whose registered pyfunc generates; both exported as an
adapter-only version (the adapter in PEFT's file layout, pinned to its base; the MiniLM run of
tests/flows/test_methods.py judges quality)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import LABELS, causal_config, run_cli, tiny_config
from tests.flows.test_serving import _serve_and_invoke

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TEXTS = ["my card has not arrived", "change my pin", "what exchange rate do you use"]


def _exported(name: str, version: str) -> Path:
    """The registered version's model folder, downloaded."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return next(local.rglob("adapter_config.json")).parent.parent


def _assert_adapter_only_layout(model_dir: Path, task_type: str) -> None:
    config = json.loads((model_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "BOTTLENECK" and config["task_type"] == task_type and config["target_modules"]
    assert (model_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    # adapter-only: the adapter, the model's config and the pinned base, no copy of the base and no merged weights
    assert (model_dir / "config.json").is_file() and (model_dir / "tuneops_base.json").is_file()
    assert not (model_dir / "base").exists() and not (model_dir / "model.safetensors").exists()


def test_bottleneck_classifier_predicts_through_the_cli_and_over_http(prefect_server, tiny_model, company_csv,
                                                                     tmp_path):
    import yaml

    from tuneops.families.classification.predictor import Classifier
    from tuneops.flows.train_model import train_model

    name = "bottleneck-classifier"
    cfg = tiny_config(company_csv, tiny_model, name, training={
        "method": "bottleneck", "epochs": 2, "learning_rate": 0.01, "bottleneck": {"reduction_factor": 8}})
    outcome = train_model(config=cfg)
    assert outcome.registration.promoted, outcome.decision.reason
    mv = MlflowClient().get_model_version(name, outcome.registration.version)
    assert mv.tags["tuneops.method"] == "bottleneck"
    model_dir = _exported(name, mv.version)
    _assert_adapter_only_layout(model_dir, "SEQ_CLS")

    expected = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"text": TEXTS}))
    assert set(expected.label) <= set(LABELS)
    # The downloaded folder reloads (base + adapter, through the method's loader) to the same predictions.
    reloaded = Classifier(model_dir).predict(TEXTS)
    assert reloaded.labels == expected.label.tolist()
    assert reloaded.confidences == pytest.approx(expected.confidence.tolist(), abs=1e-6)

    config = tmp_path / "bottleneck.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "texts.csv", index=False)
    done = run_cli("predict", "--config", str(config), "--input", str(tmp_path / "texts.csv"),
                   "--output", str(tmp_path / "predictions.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = pd.read_json(tmp_path / "predictions.jsonl", lines=True)
    assert predicted.label.tolist() == expected.label.tolist()

    served = _serve_and_invoke(f"models:/{name}@champion", "text", TEXTS, tmp_path)
    assert [row["label"] for row in served] == expected.label.tolist()
    assert [row["confidence"] for row in served] == pytest.approx(expected.confidence.tolist(), abs=1e-6)


def test_bottleneck_causal_lm_learns_registers_and_generates(prefect_server, tiny_causal_lm, instruction_csv):
    from tuneops.families.causal_lm.generation import Generator
    from tuneops.flows.train_model import train_model

    name = "bottleneck-generator"
    outcome = train_model(config=causal_config(
        instruction_csv, tiny_causal_lm, name,
        training={"method": "bottleneck", "epochs": 4, "learning_rate": 0.01,
                  "bottleneck": {"placement": "houlsby", "reduction_factor": 4}},
        gate={"min_lift_over_baseline": None}))
    assert outcome.registration.promoted, outcome.decision.reason
    mv = MlflowClient().get_model_version(name, outcome.registration.version)
    assert mv.tags["tuneops.method"] == "bottleneck" and mv.tags["tuneops.task"] == "causal_lm"
    # The base is frozen random weights, which adapters alone barely steer in a few epochs (LoRA on every linear
    # layer does better there; on the pretrained MiniLM the adapters learn the task, test_methods.py): the
    # validation loss on the responses must still fall, epoch after epoch, over the first three.
    losses = [m.value for m in MlflowClient().get_metric_history(outcome.run_id, "validation_loss")]
    assert len(losses) == 4 and losses[0] > losses[1] > losses[2], losses
    model_dir = _exported(name, mv.version)
    _assert_adapter_only_layout(model_dir, "CAUSAL_LM")

    prompts = ["Which intent: How do I change my PIN?", "Which intent: my card still has not arrived"]
    out = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"prompt": prompts}))
    assert len(out) == 2 and (out.prompt_tokens > 0).all()
    assert Generator(model_dir).generate(prompts) == out.response.tolist()  # the downloaded folder reloads the same
