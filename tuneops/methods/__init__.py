"""Fine-tuning methods, one module each, registered by name.

A method turns a freshly loaded base model into the model to train, and back into a plain
transformers model for export. Adding a method means adding a module that calls
:func:`register` and importing it below; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneops.config import TrainingConfig


@dataclass(frozen=True)
class Method:
    """How one fine-tuning method prepares a model and exports it."""

    name: str
    prepare: Callable[[Any, TrainingConfig], Any]
    export: Callable[[Any], Any]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    return METHODS[name]


from tuneops.methods import full, lora  # noqa: E402,F401  (each module registers itself)
