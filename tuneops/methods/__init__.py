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
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tuneops.plugins import Registry, caller_module


class MethodSettings(BaseModel):
    """Base of every method's settings: unknown keys are errors, like everywhere in the config."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Method:
    """How one fine-tuning method prepares a model, and whether its result can be merged.

    ``prepare(model, settings, task_type)`` returns the model to train. Every method but full is
    registered as its adapter alone, pinned to its base (tuneops.training.model_loading); ``mergeable``
    adapters (LoRA, IA3) can fold into the base weights, which a runtime that needs plain weights does
    in memory; the others (prefix and prompt tuning, bottleneck adapters) always run as base + adapter.
    ``save`` and ``load`` write and read that adapter folder (PEFT's ``save_pretrained`` and
    ``PeftModel.from_pretrained`` unless the method is one PEFT does not know); ``is_adapter`` tells
    the adapter's own parameters from a trained head, for the changed-by-training check.
    """

    name: str
    summary: str
    settings: type[MethodSettings] | None
    prepare: Callable[[Any, Any, str], Any]
    mergeable: bool = True
    adapt_base: Callable[[Any], Any] = lambda model: model
    """Called on the base model before the saved adapter is loaded onto it (serving), as prepare does."""
    save: Callable[[Any, Path], None] = lambda model, folder: peft_save(model, folder)
    """Write the trained model's adapter (PEFT's file layout) into the folder."""
    load: Callable[[Any, Path], Any] = lambda base, folder: peft_load(base, folder)
    """The base model with the adapter saved in the folder put onto it, ready to predict."""
    is_adapter: Callable[[str], bool] = lambda name: peft_adapter_parameter(name)
    """Whether a trainable parameter (by name) belongs to the adapter proper rather than to a trained head."""


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    """Add a method under its name (at a method module's top level); a name another module registered already is
    refused (:class:`tuneops.plugins.NameTaken`, naming both modules)."""
    return METHODS.add(method.name, method, by=caller_module())


def get(name: str) -> Method:
    return METHODS[name]


def peft_save(model: Any, folder: Path) -> None:
    model.save_pretrained(str(folder))


def peft_load(base: Any, folder: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder))


def peft_adapter_parameter(name: str) -> bool:
    # modules_to_save (the classification head) trains in every method; the adapter proper must too.
    return "modules_to_save" not in name and "original_module" not in name


def peft_task_type(task_type: str) -> Any:
    from peft import TaskType

    return TaskType[task_type]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
