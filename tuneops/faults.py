"""Fault-injection points: TEST-ONLY hooks that make a fault test deterministic instead of a race.

``TUNEOPS_FAULT_PAUSE=register:after_create_version`` (a comma-separated list of point names) makes the process
that reaches that point write a marker file ``<TUNEOPS_FAULT_DIR>/<point>.paused`` (default folder
``$TUNEOPS_HOME/faults``) holding its pid, then wait until the test removes the file. Meanwhile the test does its
damage (kills a server, starts a rival process), then deletes the marker to let the code go on. Each point
pauses once per process, so a retry in the same process runs straight through.

Nothing in production sets these variables; with them unset :func:`pause_point` returns at once and costs one
dictionary look-up. The points are named ``<area>:<step>``; the ones that exist:

- ``register:after_create_version`` (tuneops.registry.versions.log_and_register): the version exists with its
  provenance tags, still marked pending; no description, model card or alias yet;
- ``promote:after_read_champion`` (tuneops.registry.versions.promote): inside the promotion lock, after the old champion
  was read and before any alias moved.

``TUNEOPS_FAULT_NOTE=alias_lock:waiting`` makes a process write ``<point>.reached`` when it gets there, without
stopping (:func:`note`): a test waits for that file to know a rival process is blocked where it should be.
``alias_lock:waiting`` (tuneops.registry.versions.alias_lock) is reached when the lock is found taken by another holder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_ENV = "TUNEOPS_FAULT_PAUSE"
NOTE_ENV = "TUNEOPS_FAULT_NOTE"
DIR_ENV = "TUNEOPS_FAULT_DIR"
MAX_PAUSE_S = 600.0
_fired: set[str] = set()


def marker(point: str, suffix: str = ".paused") -> Path:
    """The file a paused process writes for ``point`` (the test waits for it, then removes it)."""
    from tuneops import settings

    folder = Path(os.environ.get(DIR_ENV) or settings.home() / "faults")
    return folder / f"{point.replace(':', '-')}{suffix}"


def note(point: str) -> None:
    """Write ``<point>.reached`` if TUNEOPS_FAULT_NOTE names ``point`` (test-only; never waits)."""
    wanted = os.environ.get(NOTE_ENV)
    if wanted and point in {p.strip() for p in wanted.split(",")}:
        path = marker(point, ".reached")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(os.getpid()))


def pause_point(point: str) -> None:
    """Pause here if TUNEOPS_FAULT_PAUSE names ``point`` (test-only; see the module's docstring)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or point in _fired or point not in {p.strip() for p in wanted.split(",")}:
        return
    _fired.add(point)
    path = marker(point)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    deadline = time.monotonic() + MAX_PAUSE_S
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
