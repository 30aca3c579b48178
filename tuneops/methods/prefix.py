"""Prefix tuning: trainable key/value prefixes in every attention layer; the base model stays frozen.

Prefixes cannot be merged into weights: the model is served as the base plus the PEFT adapter.
"""

from typing import Any

from pydantic import Field

from tuneops.methods import Method, MethodSettings, peft_task_type, register


class PrefixSettings(MethodSettings):
    """Settings of method: prefix."""

    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length in tokens, per layer.")
    projection: bool = Field(False, description="Reparameterise the prefix through a small MLP (more stable).")
    projection_hidden_size: int = Field(128, ge=8, description="Hidden size of that MLP when projection is on.")


def accept_prefix(model: Any) -> Any:
    """Let PEFT hand its prefix to an encoder that names the argument ``cache``.

    transformers 5 renamed ``past_key_values`` to ``cache`` (the old name still works through a
    deprecation shim), but PEFT decides whether a model supports prefixes by looking for the old
    name in the backbone's signature. BERT-family encoders then fail although they would attend to
    the prefix. This gives the backbone instance a forward whose signature has the old name and
    passes it on as ``cache``; decoders, which still have ``past_key_values``, are left alone.
    """
    import inspect

    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if backbone is None:
        return model
    parameters = inspect.signature(backbone.forward).parameters
    if "past_key_values" in parameters or "cache" not in parameters:
        return model
    original = backbone.forward

    def forward(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        return original(*args, cache=past_key_values, **kwargs)

    backbone.forward = forward
    return model


def prepare(model: Any, settings: PrefixSettings, task_type: str) -> Any:
    from peft import PrefixTuningConfig, get_peft_model

    return get_peft_model(accept_prefix(model), PrefixTuningConfig(
        task_type=peft_task_type(task_type), num_virtual_tokens=settings.num_virtual_tokens,
        prefix_projection=settings.projection, encoder_hidden_size=settings.projection_hidden_size,
    ))


register(Method(name="prefix", summary="trainable attention prefixes (prefix tuning), served as base + adapter",
                settings=PrefixSettings, prepare=prepare, mergeable=False, adapt_base=accept_prefix))
