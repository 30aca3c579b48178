"""The local tuneops stack behind `make up` / `make down` (`tuneops up` / `tuneops down`).

`up` starts, each in its own process group and each only if it is not already running:

1. an MLflow tracking server (SQLite backend ``$TUNEOPS_HOME/mlflow.db``, or the database ``mlflow`` of the
   PostgreSQL server named by ``--database``; artifacts served from ``$TUNEOPS_HOME/mlartifacts`` or an
   ``s3://`` destination);
2. a Prefect server (SQLite under ``$TUNEOPS_HOME/prefect``, or the database ``prefect`` of that PostgreSQL
   server through asyncpg; UI included, schedulers on);
3. the process work pool ``tuneops-process`` with a ``training`` queue that runs one flow at a time;
4. one Prefect process worker (``--workers N``: N of them) whose flow runs log to the MLflow server and send
   heartbeats, with the automation that marks a flow run Crashed when its heartbeats stop (its worker or
   machine died);

then it deploys ``infra/prefect.yaml`` and prints the URLs. Pid files (pid + process start time, so a
recycled pid is never mistaken for ours) and logs live under ``$TUNEOPS_HOME/stack/``. Running `up`
twice is harmless: healthy services are kept, deployments are re-applied. `down` stops every process
`up` started, children included (flow runs in progress are killed).

Only the standard library is imported at module level: the servers and the Prefect CLI run as subprocesses
(the PostgreSQL check imports psycopg2 when it runs). `service_settings` is the one place that names each
service's backend URIs, server URLs and S3 variables; infra/docker-compose.yml is tested against it.
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
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
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
# The two databases of a PostgreSQL stack (`--database`), on the one server it names.
MLFLOW_DATABASE = "mlflow"
PREFECT_DATABASE = "prefect"
# The S3 settings the MLflow server and the flow runs read (boto3's standard variables, plus MLflow's own endpoint
# variable, which defaults to AWS_ENDPOINT_URL).
S3_ENV = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
          "AWS_DEFAULT_REGION")
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
    database: str | None = None  # postgresql://USER[:PASSWORD]@HOST:PORT; None = SQLite under home
    workers: int = 1

    @classmethod
    def from_env(cls, **overrides: object) -> StackSettings:
        env = os.environ
        values: dict[str, object] = {
            "home": Path(env.get("TUNEOPS_HOME", ".tuneops")).resolve(),
            "host": env.get("TUNEOPS_HOST", "127.0.0.1"),
            "prefect_port": int(env.get("TUNEOPS_PREFECT_PORT", "4200")),
            "mlflow_port": int(env.get("TUNEOPS_MLFLOW_PORT", "5000")),
            "mlflow_artifacts": env.get("TUNEOPS_MLFLOW_ARTIFACTS") or None,
            "database": env.get("TUNEOPS_DATABASE") or None,
            "workers": int(env.get("TUNEOPS_WORKERS", "1")),
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

    @property
    def worker_services(self) -> tuple[str, ...]:
        """'worker', then 'worker-2' ... 'worker-N' for --workers N."""
        return ("worker", *(f"worker-{i}" for i in range(2, self.workers + 1)))

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
    # A killed process on a busy machine takes a moment to go: return once it has (or after 10 s).
    deadline = time.monotonic() + 10
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


def worker_name(service: str) -> str:
    """The name a worker service registers on the pool: tuneops-HOST, tuneops-HOST-2, ..."""
    suffix = service.removeprefix("worker")
    return f"tuneops-{socket.gethostname()}{suffix}"


def _worker_online(settings: StackSettings, service: str = "worker") -> bool:
    try:
        status, body = _post(f"{settings.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
    except OSError:
        return False
    return status == 200 and any(w.get("status") == "ONLINE" and w.get("name") == worker_name(service)
                                 for w in json.loads(body))


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


# --------------------------------------------------------------------------- backends


def database_uris(database: str) -> dict[str, str]:
    """The backend URIs of both servers on the PostgreSQL server that ``database`` names.

    ``postgresql://USER[:PASSWORD]@HOST:PORT`` -> MLflow: ``postgresql+psycopg2://.../mlflow``, Prefect:
    ``postgresql+asyncpg://.../prefect``. The user, password, host and port are kept as written (compose
    passes ``${POSTGRES_USER}`` placeholders through); the two database names are fixed, so a backup, a
    migration or the compose file always knows where each server's data is.
    """
    parts = urllib.parse.urlsplit(database)
    fix = ("Give the server only: --database postgresql://USER[:PASSWORD]@HOST:PORT (tuneops uses its "
           f"databases {MLFLOW_DATABASE!r} and {PREFECT_DATABASE!r}).")
    if parts.scheme not in ("postgresql", "postgres"):
        raise StackError(f"--database {_redact(database)}: not a postgresql:// URL. {fix}")
    try:
        bad_port = parts.port is None and parts.netloc.endswith(":")
    except ValueError:
        bad_port = True
    if not parts.hostname or not parts.username or bad_port:
        raise StackError(f"--database {_redact(database)}: needs a user and a host (and a numeric port). {fix}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StackError(f"--database {_redact(database)}: names a database or options. {fix} "
                         "TLS and other libpq options come from the PG* environment variables (e.g. PGSSLMODE).")
    # The driver is explicit: SQLAlchemy 2.1 (MLflow's) maps a bare postgresql:// to psycopg 3, not psycopg2.
    return {"mlflow": f"postgresql+psycopg2://{parts.netloc}/{MLFLOW_DATABASE}",
            "prefect": f"postgresql+asyncpg://{parts.netloc}/{PREFECT_DATABASE}"}


def _redact(uri: str) -> str:
    """A URI with its password replaced by ***, for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def s3_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The S3 variables of ``environ`` that are set (MLFLOW_S3_ENDPOINT_URL defaults to AWS_ENDPOINT_URL)."""
    env = {name: environ[name] for name in S3_ENV if environ.get(name)}
    if "AWS_ENDPOINT_URL" in env:
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    return env


def backend_env(*, home: Path, mlflow_url: str, prefect_api: str, database: str | None = None,
                mlflow_artifacts: str | None = None, s3: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Service -> the backend URIs, server URLs and S3 settings it runs with, by environment variable name.

    Pure data for given endpoints: `up` passes these to its processes (``service_settings``), and
    tests/infra/test_compose_in_step.py checks that infra/docker-compose.yml sets the same names to the
    same values for its endpoints (``mlflow:5000``, ``prefect-server:4200``, ``postgres:5432``, ``minio:9000``).
    """
    s3 = s3_env(s3 or {})
    uris = database_uris(database) if database else {"mlflow": f"sqlite:///{home / 'mlflow.db'}"}
    prefect = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": uris["prefect"]} if "prefect" in uris else {}
    return {
        # MLflow 3's server also starts a pool of huey job consumers (GenAI jobs) that tuneops never uses: about
        # seven idle processes per server, which cost start-up time and memory on a 2-core machine.
        "mlflow": {"MLFLOW_BACKEND_STORE_URI": uris["mlflow"],
                   "MLFLOW_ARTIFACTS_DESTINATION": mlflow_artifacts or str(home / "mlartifacts"),
                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **s3},
        "prefect": prefect,
        "worker": {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_url, **s3},
    }


def service_settings(settings: StackSettings, environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """``backend_env`` for this stack's endpoints and the S3 settings of the environment."""
    return backend_env(home=settings.home, mlflow_url=settings.mlflow_url, prefect_api=settings.prefect_api,
                       database=settings.database, mlflow_artifacts=settings.mlflow_artifacts,
                       s3={**(os.environ if environ is None else environ), **settings.env})


def check_database(database: str) -> None:
    """Both databases answer through the drivers the servers use, or a StackError naming the fix."""
    import importlib.util

    for module, package, who in (("psycopg2", "psycopg2-binary", "MLflow's PostgreSQL store"),
                                 ("asyncpg", "asyncpg", "Prefect's PostgreSQL database")):
        if importlib.util.find_spec(module) is None:
            raise StackError(f"the PostgreSQL driver {module} is not installed in {sys.prefix} ({who} needs it). "
                             f"Install it: {sys.executable} -m pip install {package} (or `make install`).")
    import psycopg2

    parts = urllib.parse.urlsplit(database)
    where = f"{parts.hostname}:{parts.port or 5432}"
    for name, uri in database_uris(database).items():
        try:
            psycopg2.connect(uri.split("+", 1)[0] + "://" + uri.split("://", 1)[1], connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).split())
            if "does not exist" in reason and "database" in reason:
                raise StackError(f"the {name} database {uri.rsplit('/', 1)[1]!r} does not exist on PostgreSQL "
                                 f"at {where}. Create it: createdb -h {parts.hostname} -p {parts.port or 5432} "
                                 f"-U {parts.username} {uri.rsplit('/', 1)[1]}") from None
            raise StackError(f"PostgreSQL at {where} (--database {_redact(database)}) is unreachable: {reason}. "
                             "Start it, or fix the URL (user, password, host, port).") from None


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
    # The backend store and artifact destination reach `mlflow server` as MLFLOW_BACKEND_STORE_URI and
    # MLFLOW_ARTIFACTS_DESTINATION (service_settings), so no password shows in the process list or pid file.
    commands: dict[str, tuple[list[str], str, Callable[[], bool], int | None]] = {
        "mlflow": ([_bin("mlflow"), "server", "--serve-artifacts", "--host", settings.host,
                    "--port", str(settings.mlflow_port), "--workers", "1"],
                   f"MLflow server on {settings.mlflow_url}", lambda: _healthy(f"{settings.mlflow_url}/health"),
                   settings.mlflow_port),
        "prefect": ([_bin("prefect"), "server", "start", "--host", settings.host, "--port",
                     str(settings.prefect_port)],
                    f"Prefect server on {settings.prefect_url}", lambda: _healthy(f"{settings.prefect_api}/health"),
                    settings.prefect_port),
    }
    for service in settings.worker_services:
        commands[service] = ([_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                              "--name", worker_name(service)],
                             f"Prefect worker {worker_name(service)} on pool {WORK_POOL}",
                             lambda service=service: _worker_online(settings, service), None)
    return commands


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
    """Start the servers, wait for their health, set up the pool, start the workers and deploy."""
    extra = service_settings(settings, env)
    for service in ("mlflow", "prefect"):
        argv, what, _, _ = commands[service]
        pid = running_pid(settings, service)
        if pid is None:
            started[service] = _spawn(settings, service, argv, {**env, **extra[service]})
            say(f"starting {what} (pid {started[service]}, log: {settings.log_file(service)})")
        else:
            say(f"{what} already running (pid {pid})")
    for service in ("mlflow", "prefect"):
        _, what, check, _ = commands[service]
        wait_until(settings, service, started.get(service) or running_pid(settings, service) or -1, check, what)
    say("MLflow and Prefect servers are healthy")
    _ensure_work_pool(settings, env, say)
    _ensure_zombie_automation(settings, say)
    pids = {}
    for service in settings.worker_services:
        argv, what, check, _ = commands[service]
        pid = running_pid(settings, service)
        if pid is None:
            pid = started[service] = _spawn(settings, service, argv, {**env, **extra["worker"]})
            say(f"starting {what} (pid {pid}, log: {settings.log_file(service)})")
        else:
            say(f"{what} already running (pid {pid})")
        pids[service] = pid
    say(f"deploying {PREFECT_FILE.relative_to(ROOT)} ...")
    out = deploy(settings, env)
    count = out.count("successfully created")
    for service, pid in pids.items():
        _, what, check, _ = commands[service]
        wait_until(settings, service, pid, check, what)
    workers = "worker online" if len(pids) == 1 else f"{len(pids)} workers online"
    say(f"{count} deployments applied; {workers}")


def up(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Start what is not running, check health, deploy, print the URLs. Safe to run again."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    commands = _commands(settings)
    env = service_env(settings)
    if settings.workers < 1:
        raise StackError(f"--workers {settings.workers}: the stack needs at least one worker (e.g. --workers 2, "
                         "or TUNEOPS_WORKERS=2).")
    if settings.database:
        check_database(settings.database)  # before any process starts: a clear error, nothing half-started
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
        for service in _running_order(settings):
            if service in started:
                stop_service(settings, service)
        raise
    say("")
    say(f"  Prefect UI   {settings.prefect_url}   (API {settings.prefect_api})")
    say(f"  MLflow UI    {settings.mlflow_url}")
    if settings.database:
        uris = database_uris(settings.database)
        say(f"  databases    {_redact(uris['mlflow'])} (MLflow), {_redact(uris['prefect'])} (Prefect)")
    say(f"  logs, pids   {settings.state_dir}")
    say("")
    say(f"  Use them from a shell:  export PREFECT_API_URL={settings.prefect_api} "
        f"MLFLOW_TRACKING_URI={settings.mlflow_url}")
    say("  Stop everything:        make down")


def _running_order(settings: StackSettings) -> list[str]:
    """Every service to stop, workers first: those of these settings and any other `up --workers N` left."""
    extra = sorted(p.stem for p in settings.state_dir.glob("worker-*.pid")) if settings.state_dir.exists() else []
    workers = list(dict.fromkeys([*settings.worker_services, *extra]))
    return [*workers, *SERVICES[1:]]


def down(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Stop every service `up` started from this TUNEOPS_HOME (workers first); harmless when none runs."""
    for service in _running_order(settings):
        if stop_service(settings, service):
            say(f"stopped {service}")
        else:
            say(f"{service} was not running")


def status(settings: StackSettings) -> dict[str, int | None]:
    """Service -> pid of the running process (None when it is not running)."""
    return {service: running_pid(settings, service) for service in _running_order(settings)}
