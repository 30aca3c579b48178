"""What the name registries of methods, inference runtimes and task families share: one entry per name.

Such a registry is filled by the modules of its package as they are imported (``register(...)`` at a module's top
level): adding a method means adding a file. A second entry under a name that another module already registered
is refused, naming both modules, as PEFT's own method registry refuses a duplicate: replacing it silently would
train or serve with code nobody chose, depending on which file happened to be imported last. The module that
registered a name may register it again (``importlib.reload``).
"""

from __future__ import annotations

import sys
from typing import TypeVar

from tuneops.errors import TuneopsError

T = TypeVar("T")


class NameTaken(TuneopsError):
    """Two modules register the same name in one registry."""


class Registry(dict[str, T]):
    """A plain ``dict`` of name -> entry that remembers which module registered each name."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        """What an entry is, for messages ("method", "runtime", ...)."""
        self.registered_by: dict[str, str] = {}

    def add(self, name: str, entry: T, by: str) -> T:
        """Register ``entry`` under ``name`` on behalf of module ``by``; :class:`NameTaken` if another module has."""
        first = self.registered_by.get(name) if name in self else None
        if first is not None and first != by:
            raise NameTaken(f"{self.kind} '{name}' is registered twice: by {first} and by {by}; give one of them "
                            f"another name (each {self.kind} needs a name of its own)")
        self[name] = entry
        self.registered_by[name] = by
        return entry


def caller_module(depth: int = 2) -> str:
    """The module of the function that called the one calling this (``register``'s caller, by default)."""
    return str(sys._getframe(depth).f_globals.get("__name__", "?"))
