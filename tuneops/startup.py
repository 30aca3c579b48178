"""Overlap the independent start-up work of a training run.

With no PREFECT_API_URL, a Prefect flow call first boots a local API server in a subprocess
(7-14 s on 2 cores), and only then does the run import torch, transformers and Great
Expectations. Nothing about the server depends on the ML stack, so :func:`prepare_training`
launches the same server process (Prefect's own uvicorn app factory, SQLite under
PREFECT_HOME, UI off) first, imports the ML stack and opens the MLflow store while it boots on
the other core, and points this process at it. It is stopped when the process exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tuneops.errors import TuneopsError
from tuneops.ports import free_port
from tuneops.registry import tracking

STARTUP_TIMEOUT_S = 120


def _stop(process: subprocess.Popen) -> None:
    # Send the run's buffered logs while the server still listens (logging's own exit flush runs
    # later, and would wait 5 s on a stopped server).
    if "prefect.logging.handlers" in sys.modules:
        sys.modules["prefect.logging.handlers"].APILogWorker.drain_all(timeout=5)
    process.terminate()
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when its parent dies, even by SIGKILL (no orphaned server)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux/glibc: the atexit handler still stops it on a normal exit


def launch_local_prefect_server() -> tuple[subprocess.Popen, str]:
    """Start Prefect's API (no UI) on a free loopback port; return the process and its API URL."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    port = free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    atexit.register(_stop, process)
    return process, f"http://127.0.0.1:{port}/api"


def wait_healthy(process: subprocess.Popen, api_url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TuneopsError(f"the local Prefect server exited with code {process.returncode} while starting; "
                               f"check PREFECT_HOME={os.environ.get('PREFECT_HOME')} is writable, or set "
                               "PREFECT_API_URL to a running server")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TuneopsError(f"the local Prefect server did not answer within {timeout:.0f} s; set PREFECT_API_URL "
                       "to a running server (`make up`) instead")


def prepare_training(experiment: str) -> None:
    """Boot the local Prefect server (when no PREFECT_API_URL) while loading the ML stack and MLflow."""
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = launch_local_prefect_server()
    import great_expectations  # noqa: F401
    from transformers import Trainer  # noqa: F401

    tracking.experiment_id(experiment)
    if server is not None:
        wait_healthy(*server)
        os.environ["PREFECT_API_URL"] = server[1]
