"""IA3: learned vectors that rescale keys, values and feed-forward activations (far fewer weights than LoRA).

The vectors can fold into the base weights (merged in memory for runtimes that need plain weights), like LoRA.
"""

from typing import Any

from pydantic import Field, model_validator

from tuneops.methods import Method, MethodSettings, peft_task_type, register


class IA3Settings(MethodSettings):
    """Settings of method: ia3."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["key", "value", "output.dense"],
        description="Layers whose activations get a learned scaling vector.",
    )
    feedforward_modules: list[str] = Field(
        default_factory=lambda: ["output.dense"],
        description="The feed-forward subset of target_modules (their inputs, not outputs, are scaled).",
    )

    @model_validator(mode="after")
    def _subset(self) -> "IA3Settings":
        extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
        if extra:
            raise ValueError(f"feedforward_modules must be a subset of target_modules; not targeted: {extra}")
        return self


def prepare(model: Any, settings: IA3Settings, task_type: str) -> Any:
    from peft import IA3Config, get_peft_model

    return get_peft_model(model, IA3Config(
        task_type=peft_task_type(task_type), target_modules=settings.target_modules,
        feedforward_modules=settings.feedforward_modules,
    ))


register(Method(name="ia3", summary="learned activation scaling (IA3), mergeable",
                settings=IA3Settings, prepare=prepare))
