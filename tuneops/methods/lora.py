"""LoRA: low-rank adapters on the chosen linear layers (plus the trainable classification head).

DoRA (weight-decomposed LoRA) and rsLoRA (rank-stabilised scaling alpha/sqrt(r)) are options.
The registered version stores the adapter alone, pinned to its base; the adapters can be merged into the
base weights, which a runtime that needs plain weights does in memory (tuneops.training.model_loading).
"""

from typing import Any

from pydantic import Field

from tuneops.methods import Method, MethodSettings, peft_task_type, register


class LoraSettings(MethodSettings):
    """Low-rank adapter settings (method: lora)."""

    r: int = Field(16, ge=1, description="Adapter rank; higher means more capacity and memory.")
    alpha: int = Field(32, ge=1, description="Scaling numerator; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "key", "value", "dense"],
        description="Names of the linear layers that get adapters.",
    )
    use_dora: bool = Field(False, description="DoRA: learn a magnitude vector beside the low-rank direction.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r), stable at high ranks.")


def prepare(model: Any, settings: LoraSettings, task_type: str) -> Any:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        task_type=peft_task_type(task_type), r=settings.r, lora_alpha=settings.alpha,
        lora_dropout=settings.dropout, target_modules=settings.target_modules,
        use_dora=settings.use_dora, use_rslora=settings.use_rslora,
    ))


register(Method(name="lora", summary="low-rank adapters (LoRA, DoRA, rsLoRA), mergeable",
                settings=LoraSettings, prepare=prepare))
