"""Progress lines a person can plan by: how far, how fast, and about how long is left.

``1,200/5,000 rows, 85 rows/s, about 45 s left``. Long work (batch prediction, generation, building preference
pairs) reports through a :class:`Meter` about every ``every_s`` seconds, on tuneops' own loggers (Prefect forwards
them to the run's log); work that ends sooner says nothing. Training lines get the same rate and estimate from
the Trainer's steps (:func:`tuneops.training.engine.callbacks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 10.0  # seconds between two progress lines of a Meter


def duration(seconds: float) -> str:
    """A span of time as a person says it: '45 s', '3 min 20 s', '12 min', '1 h 05 min'."""
    s = max(round(seconds), 0)
    if s < 1 and seconds > 0:
        return "under 1 s"
    if s < 60:
        return f"{s} s"
    if s < 600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    hours, minutes = divmod(round(s / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def rate(per_second: float) -> str:
    """A rate with the digits that matter: '1,234', '85', '8.5', '0.42'."""
    if per_second >= 10:
        return f"{per_second:,.0f}"
    if per_second >= 1:
        return f"{per_second:.1f}"
    return f"{per_second:.2g}"


def remaining(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the average pace so far; None before anything is done."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) * elapsed / done


def left(seconds: float) -> str:
    """'about 45 s left', or 'under 1 s left'."""
    said = duration(seconds)
    return f"{said} left" if said.startswith("under") else f"about {said} left"


def line(done: int, total: int | None, elapsed: float, unit: str = "rows") -> str:
    """'1,200/5,000 rows, 85 rows/s, about 45 s left'; without a total, '1,200 rows, 85 rows/s'; at the end,
    '5,000/5,000 rows, 85 rows/s, done in 59 s'."""
    speed = f"{rate(done / elapsed)} {unit}/s" if elapsed > 0 else f"? {unit}/s"
    if total is None:
        return f"{done:,} {unit}, {speed}"
    seconds = remaining(done, total, elapsed)
    if done >= total:
        tail = f"done in {duration(elapsed)}"
    elif seconds is None:
        tail = "no estimate yet"
    else:
        tail = left(seconds)
    return f"{done:,}/{total:,} {unit}, {speed}, {tail}"


def training(step: int, max_steps: int, first_step: int, elapsed: float, samples_per_step: int) -> str:
    """The tail of a training line: '14 samples/s, about 1 min 20 s left' (evaluation time included in the pace),
    or 'done in 13 s' at the last step. ``first_step``: the step this process started at (a resumed run's)."""
    steps = step - first_step
    if steps <= 0 or elapsed <= 0:
        return "no estimate yet"
    speed = f"{rate(steps * samples_per_step / elapsed)} samples/s"
    if step >= max_steps:
        return f"{speed}, done in {duration(elapsed)}"
    return f"{speed}, {left(remaining(steps, max_steps - first_step, elapsed) or 0)}"


class Meter:
    """Reports progress through ``emit`` at most every ``every_s`` seconds, and once at the end if it reported before.

    Call it with the count done so far and, optionally, the seconds elapsed (default: since the Meter was made);
    it is a :data:`tuneops.serving.scoring.Progress` callback too.
    """

    def __init__(self, total: int | None, unit: str, emit: Callable[[str], None], every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.unit, self.emit, self.every_s, self.clock = total, unit, emit, every_s, clock
        self.began = clock()
        self.last = 0.0  # elapsed seconds at the last line
        self.reported = False

    def __call__(self, done: int, elapsed: float | None = None) -> None:
        elapsed = self.clock() - self.began if elapsed is None else elapsed
        finished = self.total is not None and done >= self.total
        if elapsed - self.last >= self.every_s or (finished and self.reported):
            self.emit(line(done, self.total, elapsed, self.unit))
            self.last, self.reported = elapsed, True
            if finished:
                self.reported = False  # the end is said once
