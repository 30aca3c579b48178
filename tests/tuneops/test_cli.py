import json
import subprocess
import sys

import pytest


def test_help_does_not_import_heavy_libraries():
    """`tuneops --help` stays fast because nothing heavy is imported on its path."""
    code = ("import sys, contextlib, io\n"
            "from tuneops import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['--help'])\n"
            "heavy = ['torch', 'transformers', 'mlflow', 'prefect', 'great_expectations', 'evidently', 'pandas']\n"
            "print(__import__('json').dumps([m for m in heavy if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "tuneops.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("train", "predict", "promote", "rollback"):
        assert command in out


def test_unreachable_mlflow_server_is_a_clear_error(tmp_path):
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "tuneops.cli", "rollback", "m"], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "MLflow tracking server at http://127.0.0.1:9/health is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_local_prefect_server_dies_with_a_killed_cli(tmp_path):
    """A SIGKILLed `tuneops` (OOM killer, kill -9) leaves no orphaned Prefect server behind."""
    import os
    import signal
    import time

    code = ("from tuneops import settings; settings.configure_environment()\n"
            "from tuneops import startup\n"
            "process, _ = startup.launch_local_prefect_server()\n"
            "print(process.pid, flush=True)\n"
            "import time; time.sleep(120)\n")
    env = {**os.environ, "TUNEOPS_HOME": str(tmp_path)}
    env.pop("PREFECT_HOME", None)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    server = int(parent.stdout.readline())
    os.kill(server, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"Prefect server {server} outlived its killed parent")
