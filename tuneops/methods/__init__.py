"""Fine-tuning methods, one module each, found by name.

A method module defines its settings (a pydantic model, validated as ``training.<name>`` in the
config), how it turns a freshly loaded base model into the model to train, and how the trained
model is exported. Every module in this package that calls :func:`register` is a method:
adding a method means adding a file, nothing else changes (the config picks it up too).

Task types are PEFT's names: ``SEQ_CLS`` (classification) and ``CAUSAL_LM`` (generation).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class MethodSettings(BaseModel):
    """Base of every method's settings: unknown keys are errors, like everywhere in the config."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Method:
    """How one fine-tuning method prepares a model, and whether its result can be merged.

    ``prepare(model, settings, task_type)`` returns the model to train. ``mergeable`` methods
    (full, LoRA, IA3) export plain transformers weights; the others (prefix and prompt tuning)
    export the base model plus the PEFT adapter, loaded together at serving time.
    """

    name: str
    summary: str
    settings: type[MethodSettings] | None
    prepare: Callable[[Any, Any, str], Any]
    mergeable: bool = True
    adapt_base: Callable[[Any], Any] = lambda model: model
    """Called on the base model before the saved adapter is loaded onto it (serving), as prepare does."""


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    return METHODS[name]


def peft_task_type(task_type: str) -> Any:
    from peft import TaskType

    return TaskType[task_type]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
