"""Methods are found by name, one module each: a second method under a name that another module registered is
refused with both modules named (PEFT's registry refuses duplicates too), never silently swapped in."""

from __future__ import annotations

import dataclasses

import pytest

from tuneops import methods
from tuneops.plugins import NameTaken


def test_a_method_name_registered_by_another_module_is_refused_naming_both():
    lora = methods.get("lora")
    impostor = dataclasses.replace(lora, summary="another LoRA")
    with pytest.raises(NameTaken, match=r"method 'lora' is registered twice: by tuneops\.methods\.lora and by "
                       r"tests\.tuneops\.methods\.test_registry; give one of them another name"):
        methods.register(impostor)
    assert methods.get("lora") is lora


def test_a_new_name_registers_and_a_reloaded_method_module_replaces_its_own():
    toy = dataclasses.replace(methods.get("full"), name="toy-method", summary="registered by a test")
    try:
        assert methods.register(toy) is toy and methods.get("toy-method") is toy
    finally:
        methods.METHODS.pop("toy-method")
    ia3 = methods.get("ia3")
    again = dataclasses.replace(ia3)
    try:  # what importlib.reload(tuneops.methods.ia3) does: the module that registered 'ia3' registers it again
        assert methods.METHODS.add("ia3", again, by="tuneops.methods.ia3") is again and methods.get("ia3") is again
    finally:
        methods.METHODS["ia3"] = ia3
