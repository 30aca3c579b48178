"""Runtimes are found by name, one module each: a second runtime under a name that another module registered is
refused with both modules named, never silently swapped in."""

from __future__ import annotations

import dataclasses

import pytest

from tuneops.plugins import NameTaken
from tuneops.serving import runtimes


def test_a_runtime_name_registered_by_another_module_is_refused_naming_both():
    int8 = runtimes.get("int8")
    with pytest.raises(NameTaken, match=r"runtime 'int8' is registered twice: by tuneops\.serving\.runtimes\.int8 "
                       r"and by tests\.tuneops\.serving\.runtimes\.test_registry"):
        runtimes.register(dataclasses.replace(int8, summary="another int8"))
    assert runtimes.get("int8") is int8
    toy = dataclasses.replace(int8, name="toy-runtime")
    try:
        assert runtimes.register(toy) is toy and runtimes.get("toy-runtime") is toy
    finally:
        runtimes.RUNTIMES.pop("toy-runtime")
