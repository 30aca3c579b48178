"""What a console shows: tuneops' own lines and Prefect's run and task lines, nothing of the libraries below them.

At the default level (``TUNEOPS_LOG_LEVEL`` unset, or INFO) :func:`configure` quiets the third-party libraries
before they load: Python warnings raised outside tuneops (warning filters), third-party log records below ERROR
(whatever level a library sets itself), tqdm progress bars (transformers' "Loading weights" and "Writing model
shards", huggingface_hub's, MLflow's "Downloading artifacts") and MLflow's own prints (environment variables,
which the processes tuneops starts inherit). ``TUNEOPS_LOG_LEVEL`` is the level of tuneops' own loggers; at
DEBUG (``tuneops --verbose``) every library is left as it is.

``import tuneops`` calls it, so every process that runs tuneops code is quiet from its start: the CLI, a flow run
a worker started from a deployment, a training worker, a serving worker, a demo, a test. The CLI calls it again
once it has read ``--verbose`` (and refuses a ``TUNEOPS_LOG_LEVEL`` that is no level).
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tuneops.errors import ConfigError

LEVEL_ENV = "TUNEOPS_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

QUIET_ENV = {
    "TQDM_DISABLE": "1",  # every tqdm bar: transformers', huggingface_hub's, MLflow's, datasets'
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # the same for huggingface_hub and transformers, by their own switch
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TRANSFORMERS_VERBOSITY": "error",  # transformers sets its loggers' level from this when it loads
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # MLflow configures its logger from this when it loads
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # its "View run ... at" prints against a tracking server
    "PYTHONWARNINGS": "ignore",  # child processes that are not tuneops (the local Prefect server)
}
QUIETED_ENV = "TUNEOPS_QUIETED"  # which of QUIET_ENV configure set (not the user): DEBUG takes those back

# Loggers whose lines a quiet console keeps below ERROR: tuneops', Prefect's (the run and task lines), the warnings
# Python routes to logging (only tuneops' own pass the warning filters) and a script's own.
OWN_LOGGERS = ("tuneops", "prefect", "py.warnings", "__main__")
OWN = "tuneops"
OWN_WARNINGS = r"tuneops(\.|$)"  # warnings raised by tuneops' own modules stay visible

_state: dict[str, Any] = {"quiet": False, "filters": []}


def level(strict: bool = True) -> str:
    """The level of tuneops' loggers: ``TUNEOPS_LOG_LEVEL`` (default INFO; not strict, a wrong value is INFO too)."""
    value = os.environ.get(LEVEL_ENV, "").strip().upper() or "INFO"
    if value not in LEVELS:
        if not strict:
            return "INFO"
        raise ConfigError(f"{LEVEL_ENV}={os.environ[LEVEL_ENV]!r} is not a level; use one of {', '.join(LEVELS)} "
                          "(DEBUG also shows the libraries' own warnings and progress bars)")
    return value


def configure(verbose: bool = False, strict: bool = True) -> str:
    """Quiet the libraries (unless the level is DEBUG) and give tuneops' loggers their level; returns the level.

    ``verbose`` is ``tuneops --verbose``: the level becomes DEBUG, in this process and the ones it starts.
    Idempotent; a later call at DEBUG undoes an earlier quiet one. ``strict``: refuse a wrong ``TUNEOPS_LOG_LEVEL``
    (:class:`ConfigError`) rather than take INFO.
    """
    if verbose:
        os.environ[LEVEL_ENV] = "DEBUG"
    chosen = level(strict)
    quiet = chosen != "DEBUG"
    _set_environment(quiet)
    _set_warnings(quiet)
    # Loggers made from now on (every library imported later) are _Quiet ones; those made before get the filter,
    # which holds for the records logged on them directly.
    if not issubclass(logging.getLoggerClass(), _Quiet):
        logging.setLoggerClass(_Quiet)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger) and not isinstance(logger, _Quiet) and not ours(logger.name) \
                and _ONLY_ERRORS not in logger.filters:
            logger.addFilter(_ONLY_ERRORS)
    own = logging.getLogger(OWN)
    own.setLevel(chosen)
    if _FALLBACK not in own.handlers:
        own.addHandler(_FALLBACK)
    _state["quiet"] = quiet
    if _AFTER_IMPORT not in sys.meta_path:
        sys.meta_path.insert(0, _AFTER_IMPORT)
    for name, hook in _AFTER_IMPORT.hooks.items():
        if name in sys.modules:
            hook(sys.modules[name])
    return chosen


def quiet() -> bool:
    """Whether the libraries are quieted now."""
    return bool(_state["quiet"])


def _set_environment(quiet: bool) -> None:
    ours = set(filter(None, os.environ.get(QUIETED_ENV, "").split(",")))
    if quiet:
        for key, value in QUIET_ENV.items():
            if key not in os.environ:
                os.environ[key] = value
                ours.add(key)
    else:
        for key in ours:
            os.environ.pop(key, None)
        ours = set()
    if ours:
        os.environ[QUIETED_ENV] = ",".join(sorted(ours))
    else:
        os.environ.pop(QUIETED_ENV, None)


def _set_warnings(quiet: bool) -> None:
    for entry in _state["filters"]:
        if entry in warnings.filters:
            warnings.filters.remove(entry)
    _state["filters"] = []
    ours = os.environ.get(QUIETED_ENV, "").split(",")
    if sys.warnoptions and "PYTHONWARNINGS" not in ours:  # python -W ... (or the user's PYTHONWARNINGS) wins
        return
    if quiet:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=OWN_WARNINGS)
        _state["filters"] = list(warnings.filters[:2])
    warnings._filters_mutated()  # type: ignore[attr-defined]  # what filterwarnings calls: drop cached decisions


def ours(name: str) -> bool:
    """Whether a logger's lines are tuneops' or Prefect's (kept on a quiet console), not a library's below them."""
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


def _passes(record: logging.LogRecord) -> bool:
    return not _state["quiet"] or record.levelno >= logging.ERROR or ours(record.name)


class _Quiet(logging.Logger):
    """A logger that, while the console is quiet, passes a library's records at ERROR and above only, whatever level
    the library set itself (Great Expectations sets INFO on some of its loggers, DeepSpeed resets its own)."""

    def handle(self, record: logging.LogRecord) -> None:
        if _passes(record):
            super().handle(record)


class _OnlyErrors(logging.Filter):
    """The same rule on a logger made before :func:`configure` ran."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _passes(record)


class _Fallback(logging.StreamHandler):
    """Prints tuneops' lines where nothing else would: a process where Prefect (which prints them through the
    root logger's handler) has not set logging up, such as ``tuneops predict`` or ``tuneops pairs``."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                                            "%H:%M:%S"))

    @property  # type: ignore[override]  # the stream of the moment (a test may have swapped sys.stderr)
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        own = logging.getLogger(OWN)
        if any(h is not self for h in own.handlers):
            return False
        return not (own.propagate and logging.getLogger().handlers) and super().filter(record)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a function on a library module right after it is first imported (for what exists only once it has)."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]):
        self.hooks = hooks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Then(spec.loader, hook)
                return spec
        return None


class _Then(importlib.abc.Loader):
    def __init__(self, loader: Any, hook: Callable[[ModuleType], None]):
        self.loader, self.hook = loader, hook

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.hook(module)

    def __getattr__(self, name: str) -> Any:  # the rest of the loader's interface (get_source, resources, ...)
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def _mlflow_prints(module: ModuleType) -> None:
    """MLflow prints "Successfully registered model ..." and "Created version ..." (``eprint``) past its logger."""
    original = getattr(module, "eprint", None)
    if original is None or getattr(original, "tuneops_quiet", False):
        return

    def eprint(*args: Any, **kwargs: Any) -> None:
        if not _state["quiet"]:
            original(*args, **kwargs)

    eprint.tuneops_quiet = True  # type: ignore[attr-defined]
    module.eprint = eprint  # type: ignore[attr-defined]


_ONLY_ERRORS = _OnlyErrors()
_FALLBACK = _Fallback()
_AFTER_IMPORT = _AfterImport({"mlflow.utils.logging_utils": _mlflow_prints})
