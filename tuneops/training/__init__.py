"""Training: the shared loop, what a family hands it, the engine, base models, distributed workers, search."""

from __future__ import annotations

import logging

_log = logging.getLogger("tuneops.training")


def logger() -> logging.Logger:
    """The training modules' logger. Prefect forwards the ``tuneops`` loggers to the run's log (shown in the UI and
    the CLI) through PREFECT_LOGGING_EXTRA_LOGGERS, which :func:`tuneops.settings.configure_environment` sets; a
    worker process of a distributed launch gives it a handler of its own."""
    return _log
