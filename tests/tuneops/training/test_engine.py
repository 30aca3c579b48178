"""The engine's guards: memory preflight, empty-adapter detection, early stopping, seeded determinism."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_config
from tuneops.errors import TrainingError
from tuneops.training import optim, precision


def test_preflight_refuses_a_run_that_cannot_fit_with_the_numbers(prefect_server, tiny_model, company_csv):
    from tuneops.flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "too-big", training={"batch_size": 5_000_000})
    with pytest.raises(TrainingError) as failure:
        train_model(config=cfg)
    message = str(failure.value)
    assert "does not fit in memory" in message and "GiB needed" in message and "GiB available" in message
    assert "gradient_accumulation_steps" in message  # the fix is named
    assert not MlflowClient().search_registered_models("name = 'too-big'")


def test_untrained_adapter_is_caught_before_registration(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from tuneops.training import export

    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3),
                           LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    before = export.trainable_snapshot(model)
    assert before and all("lora_" in n for n in before)
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(TrainingError, match="did not change during training"):
        export.check_adapter(model, before, tmp_path / "adapter", "lora")

    # one adapter tensor moved: accepted, and the report counts it
    name = next(n for n in before if "lora_B" in n)
    dict(model.named_parameters())[name].data.add_(0.01)
    model.save_pretrained(tmp_path / "adapter")
    report = export.check_adapter(model, before, tmp_path / "adapter", "lora")
    assert report["adapter_tensors_trained"] == 1 and report["adapter_params"] > 0


@pytest.mark.slow
def test_early_stopping_ends_training_and_same_seed_gives_same_metrics(prefect_server, tiny_model, company_csv):
    from tuneops.flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "early-stop",
                      training={"epochs": 40, "learning_rate": 0.003, "early_stopping_patience": 1})
    first = train_model(config=cfg)
    second = train_model(config=cfg)
    client = MlflowClient()
    runs = [client.get_run(o.run_id).data.metrics for o in (first, second)]
    assert runs[0]["epochs_run"] < 40, "early stopping never triggered"
    assert runs[0]["epochs_run"] == runs[1]["epochs_run"]
    for metric in ("best_validation_accuracy", "test_accuracy", "test_macro_f1"):
        assert runs[0][metric] == runs[1][metric], metric


@pytest.mark.slow
def test_bf16_trains_on_a_cpu_with_bf16_instructions_and_falls_back_to_fp32_elsewhere(
        tiny_causal_lm, instruction_csv, tmp_path, monkeypatch, caplog):
    import pandas as pd
    import torch

    from tests.conftest import causal_config
    from tuneops.data.splits import split_frame
    from tuneops.training import engine
    from tuneops.training.trainer import train

    cfg = causal_config(instruction_csv, tiny_causal_lm, "bf16", training={"epochs": 1, "precision": "bf16"})
    has_bf16 = precision.cpu_supports_bf16()
    if not torch.cuda.is_available():
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
        with caplog.at_level("WARNING", logger="tuneops.training"):
            assert precision.mixed_precision(cfg) == (False, False)
        assert "has no bf16 instructions, so it trains in fp32" in caplog.text
        # instructions, but bf16 matmuls slower than fp32 (AVX512-BF16 without AMX): fp32, and the ratio is said
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
        monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.54)
        caplog.clear()
        with caplog.at_level("WARNING", logger="tuneops.training"):
            assert precision.mixed_precision(cfg) == (False, False)
        assert "bf16 matmuls run at 0.54x the speed of fp32" in caplog.text and "trains in fp32" in caplog.text
        monkeypatch.setenv("TUNEOPS_CPU_BF16", "on")  # the operator's override: bf16 anyway
        assert precision.mixed_precision(cfg) == (True, False)
        monkeypatch.delenv("TUNEOPS_CPU_BF16")
        monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 1.5)
    assert precision.mixed_precision(cfg) == (True, False)
    assert engine.training_arguments(cfg, tmp_path / "args", "loss").bf16

    splits = split_frame(pd.read_csv(instruction_csv), cfg.split_data(), cfg.split, tmp_path / "splits")
    if not (torch.cuda.is_available() or has_bf16):
        pytest.skip("this CPU has no bf16 instructions: bf16 training itself cannot run here (fallback tested above)")
    # under CPU autocast (forced even where it would be slower: this is the plumbing); the export check reloads
    # it in fp32
    result = train(cfg, splits, tmp_path / "out")
    assert result is not None and result.best_validation["loss"] > 0


def test_fp16_on_a_cpu_is_refused_with_the_alternatives(tiny_causal_lm, instruction_csv):
    import torch

    from tests.conftest import causal_config

    if torch.cuda.is_available():
        pytest.skip("fp16 is for GPUs; this machine has one")
    with pytest.raises(TrainingError, match="fp16 needs a GPU; on a CPU use bf16"):
        precision.mixed_precision(causal_config(instruction_csv, tiny_causal_lm, "fp16",
                                                training={"precision": "fp16"}))


def test_layer_decay_and_head_rate_give_each_layer_its_own_learning_rate(tiny_model, company_csv):
    from transformers import AutoModelForSequenceClassification


    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    blocks = model.config.num_hidden_layers
    cfg = tiny_config(company_csv, tiny_model, "llrd", training={
        "learning_rate": 0.001, "head_learning_rate": 0.01, "layer_lr_decay": 0.5, "weight_decay": 0.1})
    rates = optim.learning_rate_of([n for n, _ in model.named_parameters()], cfg)
    top = f"bert.encoder.layer.{blocks - 1}.attention.self.query.weight"
    assert rates[top] == pytest.approx(0.001)
    assert rates["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.001 * 0.5 ** (blocks - 1))
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(0.001 * 0.5 ** blocks)
    assert rates["classifier.weight"] == rates["bert.pooler.dense.weight"] == pytest.approx(0.01)

    optimizer = optim.optimizer(model, cfg)
    groups = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in optimizer.param_groups}
    assert sum(groups.values()) == sum(1 for p in model.parameters() if p.requires_grad)
    assert (0.01, 0.0) in groups and (0.01, 0.1) in groups  # the head's biases are not decayed, its weights are
    assert optim.optimizer(model, tiny_config(company_csv, tiny_model, "plain")) is None  # the Trainer's own


def test_optimizer_groups_and_deepspeed_are_refused_together(tiny_model, company_csv):
    from tuneops.config import ConfigError

    with pytest.raises(ConfigError, match="head_learning_rate and layer_lr_decay need tuneops' own optimizer"):
        tiny_config(company_csv, tiny_model, "ds", training={
            "layer_lr_decay": 0.8, "distributed": {"launcher": "deepspeed",
                                                   "deepspeed_config": "configs/deepspeed/zero2.json"}})


@pytest.mark.slow
def test_training_steps_the_per_layer_optimizer(tiny_model, company_csv, tmp_path, monkeypatch):
    import pandas as pd

    from tuneops.data.splits import split_frame
    from tuneops.training.trainer import train

    built = []
    real = optim.optimizer
    monkeypatch.setattr(optim, "optimizer", lambda model, cfg: built.append(real(model, cfg)) or built[-1])
    cfg = tiny_config(company_csv, tiny_model, "llrd-train", training={
        "epochs": 1, "head_learning_rate": 0.01, "layer_lr_decay": 0.8, "label_smoothing": 0.1})
    splits = split_frame(pd.read_csv(company_csv), cfg.split_data(), cfg.split, tmp_path / "splits")
    result = train(cfg, splits, tmp_path / "out")
    assert result is not None and built and built[0] is not None
    assert built[0].state, "the Trainer did not step tuneops' optimizer"  # AdamW keeps moments per stepped param
    scheduled = sorted({g["initial_lr"] for g in built[0].param_groups})  # the schedule scaled these rates
    assert scheduled[-1] == pytest.approx(0.01) and scheduled[0] < cfg.training.learning_rate, scheduled


@pytest.mark.slow
def test_best_validation_is_read_from_the_restored_epoch_not_a_second_pass(tiny_model, company_csv, tmp_path,
                                                                           monkeypatch):
    import pandas as pd
    from transformers import Trainer

    from tuneops.data.splits import split_frame
    from tuneops.training.trainer import train

    passes: list[dict[str, float]] = []
    real = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: passes.append(real(self, *a, **k)) or passes[-1])
    cfg = tiny_config(company_csv, tiny_model, "best-eval", training={"epochs": 3, "learning_rate": 0.003})
    splits = split_frame(pd.read_csv(company_csv), cfg.split_data(), cfg.split, tmp_path / "splits")
    result = train(cfg, splits, tmp_path / "out")
    assert result is not None
    assert len(passes) == 3, "validation ran again after training"  # one pass per epoch, none after
    best = max(passes, key=lambda m: m["eval_accuracy"])  # the first best epoch is the one restored
    assert result.best_validation == {"accuracy": best["eval_accuracy"], "macro_f1": best["eval_macro_f1"]}


def test_best_validation_falls_back_to_a_pass_when_the_log_lacks_the_epoch():
    from types import SimpleNamespace

    from transformers import TrainerState

    from tuneops.training import engine

    state = TrainerState(log_history=[{"step": 4, "eval_loss": 0.5, "eval_accuracy": 0.9}])
    trainer = SimpleNamespace(state=state, evaluate=lambda: {"eval_accuracy": 0.7})
    assert engine.best_evaluation(trainer) == {"eval_accuracy": 0.7}  # no best step recorded
    state.best_global_step = 4
    assert engine.best_evaluation(trainer) == {"eval_loss": 0.5, "eval_accuracy": 0.9}
    state.best_global_step = 8
    assert engine.best_evaluation(trainer) == {"eval_accuracy": 0.7}  # the log has no entry for that step
