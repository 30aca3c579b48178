"""The local tuneops stack behind `make up` / `make down` (`tuneops up` / `tuneops down`).

`up` starts, each in its own process group and each only if it is not already running:

1. an MLflow tracking server (SQLite backend ``$TUNEOPS_HOME/mlflow.db``, artifacts served from
   ``$TUNEOPS_HOME/mlartifacts`` or an ``s3://`` destination);
2. a Prefect server (SQLite under ``$TUNEOPS_HOME/prefect``, UI included, schedulers on);
3. the process work pool ``tuneops-process`` with a ``training`` queue that runs one flow at a time;
4. a Prefect process worker whose flow runs log to the MLflow server and send heartbeats, with the automation
   that marks a flow run Crashed when its heartbeats stop (its worker or machine died);

then it deploys ``infra/prefect.yaml`` and prints the URLs. Pid files (pid + process start time, so a
recycled pid is never mistaken for ours) and logs live under ``$TUNEOPS_HOME/stack/``. Running `up`
twice is harmless: healthy services are kept, deployments are re-applied. `down` stops every process
`up` started, children included (flow runs in progress are killed).

Only the standard library is imported here: the servers and the Prefect CLI run as subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneops.errors import TuneopsError

ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = ROOT / "infra" / "prefect.yaml"
WORK_POOL = "tuneops-process"
TRAINING_QUEUE = "training"
HEALTH_TIMEOUT_S = 180.0
# Stopped in this order: the worker first, so no new flow run starts while the servers go away.
SERVICES = ("worker", "prefect", "mlflow")
# Prefect 3 learns that a flow run's process died only from missing heartbeats: every flow run the worker starts
# sends one each HEARTBEAT_S seconds (PREFECT_FLOWS_HEARTBEAT_FREQUENCY; PREFECT_RUNNER_HEARTBEAT_FREQUENCY is
# its older name; Prefect's minimum is 30), and the automation below marks a running flow run CRASHED when none
# came for ZOMBIE_AFTER_S seconds. Both can be set in the environment of `tuneops up`.
HEARTBEAT_S = int(os.environ.get("TUNEOPS_HEARTBEAT_SECONDS", "30"))
ZOMBIE_AFTER_S = int(os.environ.get("TUNEOPS_ZOMBIE_AFTER_SECONDS", str(3 * HEARTBEAT_S)))
ZOMBIE_AUTOMATION = "tuneops: crash flow runs whose heartbeats stopped"


class StackError(TuneopsError):
    """The local stack cannot be started or stopped as asked (port taken, server unhealthy...)."""


@dataclass(frozen=True)
class StackSettings:
    """Where the stack listens and keeps its state. Defaults come from the environment (and make)."""

    home: Path
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    mlflow_artifacts: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> StackSettings:
        env = os.environ
        values: dict[str, object] = {
            "home": Path(env.get("TUNEOPS_HOME", ".tuneops")).resolve(),
            "host": env.get("TUNEOPS_HOST", "127.0.0.1"),
            "prefect_port": int(env.get("TUNEOPS_PREFECT_PORT", "4200")),
            "mlflow_port": int(env.get("TUNEOPS_MLFLOW_PORT", "5000")),
            "mlflow_artifacts": env.get("TUNEOPS_MLFLOW_ARTIFACTS") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def state_dir(self) -> Path:
        return self.home / "stack"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def pid_file(self, service: str) -> Path:
        return self.state_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.state_dir / f"{service}.log"


# --------------------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _children(pid: int) -> list[int]:
    """Every descendant of a process (flow runs of the worker sit in their own sessions)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running_pid(settings: StackSettings, service: str) -> int | None:
    """The pid recorded for a service if that very process still runs, else None (stale files removed)."""
    path = settings.pid_file(service)
    try:
        record = json.loads(path.read_text())
        pid, started = int(record["pid"]), str(record["start_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _start_time(pid) == started:
        return pid
    path.unlink(missing_ok=True)
    return None


def _spawn(settings: StackSettings, service: str, argv: list[str], env: dict[str, str]) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with settings.log_file(service).open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = _start_time(process.pid)
    settings.pid_file(service).write_text(json.dumps({"pid": process.pid, "start_time": started, "argv": argv}))
    return process.pid


def stop_service(settings: StackSettings, service: str, timeout: float = 20.0) -> bool:
    """Stop a service's process group and every descendant; True if something was running."""
    pid = running_pid(settings, service)
    if pid is None:
        settings.pid_file(service).unlink(missing_ok=True)
        return False
    victims = [pid, *_children(pid)]
    for target in victims:
        try:
            if target == pid:
                os.killpg(target, signal.SIGTERM)
            else:
                os.kill(target, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_start_time(p) for p in victims):
        time.sleep(0.2)
    for target in victims:
        if _start_time(target):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10  # a SIGKILLed process is gone a moment later, not at once
    while time.monotonic() < deadline and any(_start_time(p) for p in victims):
        time.sleep(0.1)
    settings.pid_file(service).unlink(missing_ok=True)
    return True


def _log_tail(settings: StackSettings, service: str, lines: int = 15) -> str:
    try:
        text = settings.log_file(service).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


# --------------------------------------------------------------------------- health


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, payload: object, method: str = "POST", attempts: int = 5) -> tuple[int, bytes]:
    """POST/PATCH JSON; a 5xx answer is retried with doubling waits (Prefect's SQLite server answers 503 while
    its database is locked by another writer, e.g. the worker that just started)."""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except TimeoutError:  # a server just restarted can be slow to answer its first requests
            if attempt == attempts - 1:
                raise StackError(f"{url} did not answer within 30 s; see the logs in the stack folder") from None
            status, body = 504, b""
        if status < 500 or attempt == attempts - 1:
            return status, body
        time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _healthy(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


def _worker_online(settings: StackSettings) -> bool:
    try:
        status, body = _post(f"{settings.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
    except OSError:
        return False
    return status == 200 and any(w.get("status") == "ONLINE" for w in json.loads(body))


def wait_until(settings: StackSettings, service: str, pid: int, check: Callable[[], bool],
               what: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Wait for a health check; fail with the log's tail if the process dies or never gets healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if _start_time(pid) is None:
            settings.pid_file(service).unlink(missing_ok=True)
            raise StackError(f"{what} exited while starting. Last lines of {settings.log_file(service)}:\n"
                             f"{_log_tail(settings, service)}")
        time.sleep(0.5)
    raise StackError(f"{what} did not become healthy within {timeout:.0f} s; see {settings.log_file(service)}:\n"
                     f"{_log_tail(settings, service)}\nStop the stack with `make down` and retry.")


# --------------------------------------------------------------------------- the stack


def service_env(settings: StackSettings) -> dict[str, str]:
    """Environment of every service: quiet defaults, local state under TUNEOPS_HOME, the two servers.

    The worker passes it on to its flow runs, so they log to the MLflow server (tuneops.settings
    keeps an explicit MLFLOW_TRACKING_URI) and report to the Prefect server.
    """
    from tuneops.settings import QUIET_ENV

    env = {**os.environ, **QUIET_ENV, **settings.env}
    env.update({
        "TUNEOPS_HOME": str(settings.home),
        "PREFECT_HOME": str(settings.home / "prefect"),
        "PREFECT_API_URL": settings.prefect_api,
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_S))
    return env


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (prefect, mlflow)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _commands(settings: StackSettings) -> dict[str, tuple[list[str], str, Callable[[], bool], int | None]]:
    """Service -> (argv, description, health check, port)."""
    artifacts = settings.mlflow_artifacts or str(settings.home / "mlartifacts")
    return {
        "mlflow": ([_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{settings.home / 'mlflow.db'}",
                    "--artifacts-destination", artifacts, "--serve-artifacts", "--host", settings.host,
                    "--port", str(settings.mlflow_port), "--workers", "1"],
                   f"MLflow server on {settings.mlflow_url}", lambda: _healthy(f"{settings.mlflow_url}/health"),
                   settings.mlflow_port),
        "prefect": ([_bin("prefect"), "server", "start", "--host", settings.host, "--port",
                     str(settings.prefect_port)],
                    f"Prefect server on {settings.prefect_url}", lambda: _healthy(f"{settings.prefect_api}/health"),
                    settings.prefect_port),
        "worker": ([_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                    "--name", f"tuneops-{socket.gethostname()}"],
                   f"Prefect worker on pool {WORK_POOL}", lambda: _worker_online(settings), None),
    }


def _ensure_work_pool(settings: StackSettings, env: dict[str, str], say: Callable[[str], None]) -> None:
    """The process work pool, and its 'training' queue limited to one run at a time."""
    base = f"{settings.prefect_api}/work_pools/{WORK_POOL}"
    try:
        found = _get(base, timeout=30)[0]
    except OSError as exc:
        raise StackError(f"the Prefect server did not answer {base} ({exc}); see {settings.log_file('prefect')}") \
            from None
    if found == 404:
        _run([_bin("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"], env,
             f"creating work pool {WORK_POOL}")
        say(f"created work pool {WORK_POOL} (process)")
    queue = {"name": TRAINING_QUEUE, "concurrency_limit": 1,
             "description": "Training runs (manual and retrain): one at a time on this machine."}
    status, body = _post(f"{base}/queues", queue)
    if status == 409:
        status, body = _post(f"{base}/queues/{TRAINING_QUEUE}", {"concurrency_limit": 1}, method="PATCH")
    if status >= 300:
        raise StackError(f"could not set up work queue {TRAINING_QUEUE}: HTTP {status} {body[:300]!r}")


def _ensure_zombie_automation(settings: StackSettings, say: Callable[[str], None]) -> None:
    """The automation that marks a running flow run CRASHED once its heartbeats stop (its worker or machine
    died): Prefect's documented proactive trigger, one per flow run, created or updated by name."""
    automation = {
        "name": ZOMBIE_AUTOMATION,
        "description": f"A flow run that sent a heartbeat and then neither another one nor a final state within "
                       f"{ZOMBIE_AFTER_S} s lost its process: mark it Crashed (tuneops up; infra/stack.py).",
        "enabled": True,
        "trigger": {
            "type": "event", "posture": "Proactive", "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                       "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]}, "for_each": ["prefect.resource.id"],
            "threshold": 1, "within": ZOMBIE_AFTER_S,
        },
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"No heartbeat for {ZOMBIE_AFTER_S} s: the process running this flow run died "
                                "(worker killed or machine lost). Rerun it; training resumes from its last "
                                "checkpoint."}],
    }
    status, body = _post(f"{settings.prefect_api}/automations/filter", {})
    if status >= 300:
        raise StackError(f"could not list automations: HTTP {status} {body[:300]!r}")
    existing = [a["id"] for a in json.loads(body) if a.get("name") == ZOMBIE_AUTOMATION]
    if existing:
        status, body = _post(f"{settings.prefect_api}/automations/{existing[0]}", automation, method="PUT")
    else:
        status, body = _post(f"{settings.prefect_api}/automations/", automation)
        say(f"created automation '{ZOMBIE_AUTOMATION}' (heartbeat {HEARTBEAT_S} s, crash after {ZOMBIE_AFTER_S} s)")
    if status >= 300:
        raise StackError(f"could not set up the automation '{ZOMBIE_AUTOMATION}': HTTP {status} {body[:300]!r}")


def _run(argv: list[str], env: dict[str, str], what: str, timeout: float = 600) -> str:
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join("    " + line for line in (proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise StackError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def deploy(settings: StackSettings, env: dict[str, str]) -> str:
    """`prefect deploy --all` of infra/prefect.yaml from the repository root (entrypoints are relative to it)."""
    out = _run([_bin("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env,
               "prefect deploy")
    settings.log_file("deploy").write_text(out)
    return out


def _start(settings: StackSettings, commands: dict[str, tuple[list[str], str, Callable[[], bool], int | None]],
           env: dict[str, str], started: dict[str, int], say: Callable[[str], None]) -> None:
    """Start the servers, wait for their health, set up the pool, start the worker and deploy."""
    for service in ("mlflow", "prefect"):
        argv, what, _, _ = commands[service]
        pid = running_pid(settings, service)
        if pid is None:
            started[service] = _spawn(settings, service, argv, env)
            say(f"starting {what} (pid {started[service]}, log: {settings.log_file(service)})")
        else:
            say(f"{what} already running (pid {pid})")
    for service in ("mlflow", "prefect"):
        _, what, check, _ = commands[service]
        wait_until(settings, service, started.get(service) or running_pid(settings, service) or -1, check, what)
    say("MLflow and Prefect servers are healthy")
    _ensure_work_pool(settings, env, say)
    _ensure_zombie_automation(settings, say)
    argv, what, check, _ = commands["worker"]
    pid = running_pid(settings, "worker")
    if pid is None:
        pid = started["worker"] = _spawn(settings, "worker", argv, env)
        say(f"starting {what} (pid {pid}, log: {settings.log_file('worker')})")
    else:
        say(f"{what} already running (pid {pid})")
    say(f"deploying {PREFECT_FILE.relative_to(ROOT)} ...")
    out = deploy(settings, env)
    count = out.count("successfully created")
    wait_until(settings, "worker", pid, check, what)
    say(f"{count} deployments applied; worker online")


def up(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Start what is not running, check health, deploy, print the URLs. Safe to run again."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    commands = _commands(settings)
    env = service_env(settings)
    # Check every port before starting anything: a taken port is an error, not a half-started stack.
    for service, (_, what, _check, port) in commands.items():
        if port is None or running_pid(settings, service) is not None:
            continue
        if port_in_use(settings.host, port):
            raise StackError(f"cannot start the {what}: port {port} on {settings.host} is taken by another "
                             f"program (not one `make up` started from {settings.home}). Stop it, or choose "
                             f"another port: make up {service.upper()}_PORT=<port> (or TUNEOPS_"
                             f"{service.upper()}_PORT).")
    started: dict[str, int] = {}
    try:
        _start(settings, commands, env, started, say)
    except (StackError, KeyboardInterrupt):
        # Leave nothing half-started: stop what this call started, keep what was already running.
        for service in SERVICES:
            if service in started:
                stop_service(settings, service)
        raise
    say("")
    say(f"  Prefect UI   {settings.prefect_url}   (API {settings.prefect_api})")
    say(f"  MLflow UI    {settings.mlflow_url}")
    say(f"  logs, pids   {settings.state_dir}")
    say("")
    say(f"  Use them from a shell:  export PREFECT_API_URL={settings.prefect_api} "
        f"MLFLOW_TRACKING_URI={settings.mlflow_url}")
    say("  Stop everything:        make down")


def down(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Stop every service `up` started from this TUNEOPS_HOME (worker first); harmless when none runs."""
    for service in SERVICES:
        if stop_service(settings, service):
            say(f"stopped {service}")
        else:
            say(f"{service} was not running")


def status(settings: StackSettings) -> dict[str, int | None]:
    """Service -> pid of the running process (None when it is not running)."""
    return {service: running_pid(settings, service) for service in SERVICES}
