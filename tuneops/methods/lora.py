"""LoRA: low-rank adapters on the chosen linear layers, plus a trainable classification head.

For export the adapters are merged into the base weights, so the registered model is a plain
transformers model that loads without PEFT and predicts exactly what the adapter model did.
"""

from typing import Any

from tuneops.config import TrainingConfig
from tuneops.methods import Method, register


def prepare(model: Any, cfg: TrainingConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    assert cfg.lora is not None  # the config validator fills it for method: lora
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
    )
    return get_peft_model(model, peft_config)


def export(model: Any) -> Any:
    return model.merge_and_unload()


register(Method(name="lora", prepare=prepare, export=export))
