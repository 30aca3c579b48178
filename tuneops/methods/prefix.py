"""Prefix tuning: trainable key/value prefixes in every attention layer; the base model stays frozen.

Prefixes cannot be merged into weights: the export is the base model plus the PEFT adapter.
"""

from typing import Any

from pydantic import Field

from tuneops.methods import Method, MethodSettings, peft_task_type, register


class PrefixSettings(MethodSettings):
    """Settings of method: prefix."""

    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length in tokens, per layer.")
    projection: bool = Field(False, description="Reparameterise the prefix through a small MLP (more stable).")
    projection_hidden_size: int = Field(128, ge=8, description="Hidden size of that MLP when projection is on.")


def prepare(model: Any, settings: PrefixSettings, task_type: str) -> Any:
    from peft import PrefixTuningConfig, get_peft_model

    return get_peft_model(model, PrefixTuningConfig(
        task_type=peft_task_type(task_type), num_virtual_tokens=settings.num_virtual_tokens,
        prefix_projection=settings.projection, encoder_hidden_size=settings.projection_hidden_size,
    ))


register(Method(name="prefix", summary="trainable attention prefixes (prefix tuning), base + adapter export",
                settings=PrefixSettings, prepare=prepare, mergeable=False))
