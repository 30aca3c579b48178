"""The shared champions (``champion``, ``generator``) live in tests/conftest.py, so tests outside tests/flows (the
server's) share the one session-trained model; the name stays importable from here."""

from __future__ import annotations

from tests.conftest import CHAMPION_NAME

__all__ = ["CHAMPION_NAME"]
