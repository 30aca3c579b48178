"""Expected failures. Each carries a message that names the problem and the fix.

The CLI prints these without a traceback and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class TuneopsError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(TuneopsError):
    """The configuration cannot be used (typo, wrong type, contradictory values)."""

    exit_code = 2


class DataError(TuneopsError):
    """The dataset cannot be read or does not pass validation."""


class RegistryError(TuneopsError):
    """The model registry does not hold what was asked for, or cannot be reached."""


class TrainingError(TuneopsError):
    """Training cannot start or its result cannot be trusted (memory, empty adapter, export mismatch)."""


class BaseModelError(TuneopsError):
    """The base model an adapter-only version was trained on is missing here, or is not the same (its hash
    differs); the message names the base, the expected and the found hash, and how to get the right one."""

    exit_code = 2
