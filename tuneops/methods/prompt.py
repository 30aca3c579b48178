"""Prompt tuning: trainable soft-prompt embeddings prepended to the input; the base model stays frozen.

Like prefix tuning, it cannot merge: it is served as the base model plus the PEFT adapter.
"""

from typing import Any, Literal

from pydantic import Field, model_validator

from tuneops.methods import Method, MethodSettings, peft_task_type, register


class PromptSettings(MethodSettings):
    """Settings of method: prompt."""

    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Soft-prompt length in tokens.")
    init: Literal["random", "text"] = Field(
        "random", description="Start from random embeddings, or from the embeddings of init_text.")
    init_text: str | None = Field(None, description="Text whose token embeddings initialise the prompt (init: text).")

    @model_validator(mode="after")
    def _text(self) -> "PromptSettings":
        if self.init == "text" and not self.init_text:
            raise ValueError("init is 'text' but init_text is empty; give the text or set init: random")
        return self


def prepare(model: Any, settings: PromptSettings, task_type: str) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    init = PromptTuningInit.TEXT if settings.init == "text" else PromptTuningInit.RANDOM
    return get_peft_model(model, PromptTuningConfig(
        task_type=peft_task_type(task_type), num_virtual_tokens=settings.num_virtual_tokens,
        prompt_tuning_init=init, prompt_tuning_init_text=settings.init_text,
        tokenizer_name_or_path=getattr(model, "name_or_path", None) if settings.init == "text" else None,
    ))


register(Method(name="prompt", summary="trainable soft prompt (prompt tuning), served as base + adapter",
                settings=PromptSettings, prepare=prepare, mergeable=False))
