"""Multi-process training on this CPU machine: 2-process DDP over gloo, DeepSpeed ZeRO-2, and ZeRO-3 with LoRA
on MiniLM (weights sharded across the workers, gathered for the export), and 2-process DDP of a causal LM, all
launched by the flow's fine-tune task through torchrun; each registers a model that loads and predicts."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import LABELS, MINILM, ROOT, causal_config, tiny_config
from tuneops.errors import TrainingError
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _distributed_config(company_csv: str, tiny_model: str, name: str, method: str = "full",
                        **distributed: object):
    if method == "full":
        # The randomly initialised tiny BERT learns the four intents when fully trained with small batches:
        # 2 workers x 4 = 8 per step (one process at batch 8 scored 0.66-0.95 test accuracy over 20 draws;
        # at batch 16 it fell to 0.45 on some draws).
        return tiny_config(company_csv, tiny_model, name,
                           training={"method": "full", "epochs": 3, "learning_rate": 0.003, "batch_size": 4,
                                     "seed": 7, "distributed": distributed})
    # Adapters on a random base learn little (how much depends on the draw); they get the real MiniLM.
    return tiny_config(company_csv, MINILM, name, model={"base": MINILM, "max_length": 24},
                       training={"method": method, "epochs": 2, "learning_rate": 0.01, "batch_size": 8,
                                 "seed": 7, "distributed": distributed})


def _run_logs(flow_run_id) -> str:
    """Every log line the flow run (and its tasks) sent to the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return "\n".join(log.message for log in logs)


@pytest.mark.parametrize("launcher,method,extra", [
    ("torchrun", "full", {}),
    ("deepspeed", "full", {"deepspeed_config": str(ROOT / "configs/deepspeed/zero2.json")}),
    ("deepspeed", "lora", {"deepspeed_config": str(ROOT / "configs/deepspeed/zero3.json")}),
], ids=["ddp", "zero2-full", "zero3-lora"])
def test_two_process_training_registers_a_model_that_predicts(launcher, method, extra, prefect_server, tiny_model,
                                                               company_csv):
    from tuneops.flows.train_model import train_model

    name = f"distributed-{launcher}-{method}"
    state = train_model(config=_distributed_config(company_csv, tiny_model, name, method, launcher=launcher,
                                                   processes=2, **extra), return_state=True)
    outcome = state.result()
    text = _run_logs(state.state_details.flow_run_id)
    assert "launching 2" in text
    assert "rank0" in text and "rank1" in text, "both workers' logs are streamed into the run"
    if launcher == "deepspeed":
        assert "DeepSpeed" in text or "deepspeed" in text
    assert outcome.test_metrics["accuracy"] > 0.5, outcome.test_metrics  # four labels: chance is 0.25
    run = MlflowClient().get_run(outcome.run_id)
    assert "validation_accuracy" in run.data.metrics and "loss" in run.data.metrics
    model = mlflow.pyfunc.load_model(f"models:/{name}/{outcome.registration.version}")
    out = model.predict(pd.DataFrame({"text": ["my card has not arrived yet"]}))
    assert out["label"].iloc[0] in LABELS


def test_two_process_causal_lm_training_registers_a_generator(prefect_server, tiny_causal_lm, instruction_csv):
    """One trainer for both families: the causal LM trains under torchrun DDP like a classifier does."""
    from tuneops.flows.train_model import train_model

    name = "distributed-causal"
    cfg = causal_config(instruction_csv, tiny_causal_lm, name,
                        training={"batch_size": 8, "distributed": {"launcher": "torchrun", "processes": 2}})
    state = train_model(config=cfg, return_state=True)
    outcome = state.result()
    text = _run_logs(state.state_details.flow_run_id)
    assert "launching 2 torchrun workers" in text and "rank0" in text and "rank1" in text
    test_path = MlflowClient().download_artifacts(outcome.run_id, "splits/test.parquet")
    majority = float(pd.read_parquet(test_path).response.value_counts(normalize=True).iloc[0])
    assert outcome.test_metrics["exact_match"] > majority + 0.2, outcome.test_metrics  # it learned the intents
    run = MlflowClient().get_run(outcome.run_id).data.metrics
    assert run["best_validation_loss"] < 1.0 and "validation_loss" in run
    model = mlflow.pyfunc.load_model(f"models:/{name}/{outcome.registration.version}")
    out = model.predict(pd.DataFrame({"prompt": ["Which intent: How do I change my PIN?"]}))
    assert list(out.columns) == GENERATED_COLUMNS and len(out) == 1


def test_failed_launch_fails_the_task_with_the_log_tail(prefect_server, tiny_model, company_csv, tmp_path):
    from tuneops.flows.train_model import train_model

    broken = tmp_path / "zero.json"
    broken.write_text('{"zero_optimization": {"stage": 7}, "train_micro_batch_size_per_gpu": "auto"}')
    cfg = _distributed_config(company_csv, tiny_model, "distributed-broken", launcher="deepspeed", processes=2,
                              deepspeed_config=str(broken))
    with pytest.raises(TrainingError) as failure:
        train_model(config=cfg)
    message = str(failure.value)
    assert "the deepspeed launch of 2 workers exited with code" in message
    assert "last lines of its log" in message and "launcher: none" in message
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_registered_model("distributed-broken")
