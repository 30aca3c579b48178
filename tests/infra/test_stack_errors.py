"""Expected failures of `tuneops up` / `down`: a clear message and a non-zero exit, never a traceback,
and nothing left half-started."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.infra.conftest import alive
from tuneops.infra import stack
from tuneops.ports import free_port


def cli(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_port_taken_by_another_program_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        proc = cli(tmp_path, "up", "--prefect-port", str(taken), "--mlflow-port", str(free_port()))
    assert proc.returncode == 1
    assert f"port {taken} on 127.0.0.1 is taken by another program" in proc.stderr
    assert "PREFECT_PORT=<port>" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "stack").glob("*.pid")), "nothing may start when a port is taken"


def test_down_with_nothing_running_is_harmless(tmp_path):
    proc = cli(tmp_path, "down")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["worker was not running", "prefect was not running",
                                          "mlflow was not running"]


def test_a_service_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    settings = stack.StackSettings(home=tmp_path)
    argv = [sys.executable, "-c", "import sys; print('cannot open the database'); sys.exit(3)"]
    pid = stack._spawn(settings, "mlflow", argv, dict(os.environ))
    with pytest.raises(stack.StackError, match="exited while starting(.|\n)*cannot open the database"):
        stack.wait_until(settings, "mlflow", pid, lambda: False, "MLflow server", timeout=30)
    assert stack.running_pid(settings, "mlflow") is None


def test_an_unhealthy_service_times_out_with_the_fix(tmp_path):
    settings = stack.StackSettings(home=tmp_path)
    pid = stack._spawn(settings, "prefect", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    try:
        with pytest.raises(stack.StackError, match="did not become healthy within 1 s(.|\n)*make down"):
            stack.wait_until(settings, "prefect", pid, lambda: False, "Prefect server", timeout=1)
    finally:
        assert stack.stop_service(settings, "prefect")
    assert stack.running_pid(settings, "prefect") is None


def test_a_recycled_pid_is_never_taken_for_ours(tmp_path):
    """A pid file whose process is gone (or whose pid now belongs to another process) is stale."""
    settings = stack.StackSettings(home=tmp_path)
    settings.state_dir.mkdir(parents=True)
    settings.pid_file("worker").write_text(json.dumps({"pid": os.getpid(), "start_time": "0"}))
    assert stack.running_pid(settings, "worker") is None
    assert not settings.pid_file("worker").exists()
    assert stack.stop_service(settings, "worker") is False


@pytest.mark.slow
def test_a_server_that_cannot_start_fails_up_and_leaves_nothing_running(tmp_path):
    """Prefect's state folder is unusable (a file where PREFECT_HOME should be): `up` names the server,
    shows its log, exits 1, and stops the MLflow server it had started alongside."""
    (tmp_path / "prefect").write_text("not a folder")
    proc = cli(tmp_path, "up", "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.split("Last lines of")[0]
    assert message.startswith("error: Prefect server on http://127.0.0.1:") and "exited while starting" in message
    assert "Traceback" not in message
    mlflow_pid = int(re.search(r"starting MLflow server on \S+ \(pid (\d+),", proc.stdout).group(1))
    assert not alive(mlflow_pid), "the MLflow server this `up` started must be stopped"
    assert not list((tmp_path / "stack").glob("*.pid"))


def test_a_server_busy_with_its_database_is_asked_again():
    """Prefect's SQLite server answers 503 while another writer holds the database: the stack retries, then
    reports a server that stays unavailable with its status."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [503, 503, 201]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            code = answers.pop(0) if answers else 503
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"exception_message":"Service Unavailable"}' if code == 503 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/queues"
    try:
        assert stack._post(url, {"name": "training"})[0] == 201  # two busy answers, then created
        status, body = stack._post(url, {"name": "training"}, attempts=2)  # busy every time: the status comes back
        assert status == 503 and b"Service Unavailable" in body
    finally:
        server.shutdown()
