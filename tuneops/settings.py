"""Where tuneops keeps its state, and the environment it sets before heavy libraries import.

With nothing configured, everything lives under one working folder (``TUNEOPS_HOME``, default
``./.tuneops``): MLflow's SQLite store and artifacts, Prefect's SQLite database, training
outputs. Setting ``MLFLOW_TRACKING_URI`` or ``PREFECT_API_URL`` points the same code at servers.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET_ENV = {
    # Telemetry and analytics off: no network calls, no heartbeat tracebacks.
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    # Library code logs to the `tuneops` loggers, never through Prefect: Prefect forwards them to the run's log.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tuneops",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # The libraries' warnings, logs and progress bars: tuneops.console (TUNEOPS_LOG_LEVEL, `tuneops --verbose`).
}


def home() -> Path:
    """The working folder for local state (``configure_environment`` creates it; writers create their subfolders)."""
    return Path(os.environ.get("TUNEOPS_HOME", ".tuneops")).resolve()


def configure_environment() -> None:
    """Set quiet, offline, local-first defaults; values already in the environment win."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    base = home()
    base.mkdir(parents=True, exist_ok=True)  # the SQLite stores below need their folder
    os.environ.setdefault("PREFECT_HOME", str(base / "prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")


def artifact_root() -> Path:
    """Artifact folder for experiments created against a local SQLite store."""
    return home() / "mlartifacts"


def runs_dir() -> Path:
    """Scratch space for training outputs (split files, checkpoints) before they go to MLflow."""
    return home() / "runs"


def checkpoints_dir() -> Path:
    """Training checkpoints, keyed by what is trained, so a re-run after a crash finds and resumes them."""
    return home() / "checkpoints"
