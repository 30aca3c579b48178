"""The team stack for real, without containers: `tuneops up --database postgresql://...` on a real PostgreSQL
server (Debian's, started in a temporary folder) with artifacts on a real S3 server on loopback, two process
workers, and concurrent work on it: training, batch scoring, monitoring and promotion at the same time.

Tests run in file order on one stack (module fixture); the last one is `tuneops down`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.conftest import make_bucket, tiny_config
from tests.infra.conftest import Stack, alive, running_stack, wait_for_run
from tests.infra.postgres_server import Postgres, find_bindir, postgres_server
from tuneops.infra import stack as stack_code
from tuneops.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "pg-tiny"            # trained by the deployment run, scored, monitored and promoted
CONCURRENT = "pg-concurrent"  # two manual training runs started at once
BUCKET = "team-artifacts"
# What a lock problem looks like in the servers' and workers' logs (SQLite's and PostgreSQL's wordings).
LOCK_ERRORS = re.compile(r"database is locked|deadlock detected|could not serialize access|lock timeout|"
                         r"LockNotAvailable|could not obtain lock", re.IGNORECASE)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    """A real PostgreSQL server on a free loopback port with the stack's two (empty) databases."""
    if find_bindir() is None:
        pytest.fail("PostgreSQL server binaries missing: `make postgres-deps` (apt-get install postgresql); "
                    ".ci/run does it")
    with postgres_server(free_port(), (stack_code.MLFLOW_DATABASE, stack_code.PREFECT_DATABASE)) as server:
        yield server


def sql(pg: Postgres, database: str, query: str) -> list[str]:
    return pg.tool("psql", "-d", database, "-At", "-c", query).stdout.split()


@pytest.fixture(scope="module")
def team(pg, s3_endpoint, tmp_path_factory) -> Iterator[Stack]:
    """`tuneops up --database ... --workers 2 --mlflow-artifacts s3://...`; `tuneops down` after, checked."""
    make_bucket(BUCKET)
    # the environment carries the S3 endpoint and credentials (s3_endpoint)
    with running_stack(tmp_path_factory.mktemp("team-home"), "--database", pg.url, "--workers", "2",
                       "--mlflow-artifacts", f"s3://{BUCKET}/mlflow") as s:
        yield s


def start(team: Stack, deployment: str, parameters: dict) -> str:
    """Create a flow run of a deployment as the UI's Run button does; the workers pick it up."""
    found = httpx.get(f"{team.api}/deployments/name/{deployment}")
    assert found.status_code == 200, f"{deployment} not deployed: {found.text}"
    response = httpx.post(f"{team.api}/deployments/{found.json()['id']}/create_flow_run",
                          json={"parameters": parameters})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def config_of(company_csv: str, tiny_model: str, name: str, **sections) -> dict:
    monitoring = {"min_rows": 20, "embedding_sample": 0, "retrain": {"enabled": False}}
    return tiny_config(company_csv, tiny_model, name, monitoring=monitoring, **sections).model_dump(mode="json")


def interval(run: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])


def mlflow_client(team: Stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=team.mlflow_url, registry_uri=team.mlflow_url)


# --------------------------------------------------------------------------- refused before anything starts


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "TUNEOPS_HOME": str(home)}
    nobody = free_port()
    proc = Stack(home, "", "", env).cli("up", "--database", f"postgresql://tuneops:secret@127.0.0.1:{nobody}",
                                        "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()))
    assert proc.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{nobody}" in proc.stderr and "is unreachable" in proc.stderr
    assert "Start it, or fix the URL" in proc.stderr
    assert "secret" not in proc.stderr, "the password must not be printed"
    assert "Traceback" not in proc.stderr
    assert not list((home / "stack").glob("*.pid")), "nothing may start when the database is unreachable"


def test_a_missing_database_names_createdb(pg):
    # Before the stack starts nothing holds a connection, so the database can be moved aside and back.
    pg.tool("psql", "-d", "postgres", "-c", "ALTER DATABASE mlflow RENAME TO mlflow_aside")
    try:
        with pytest.raises(stack_code.StackError, match=f"database 'mlflow' does not exist on PostgreSQL at "
                           f"127.0.0.1:{pg.port}. Create it: createdb -h 127.0.0.1 -p {pg.port} -U postgres mlflow"):
            stack_code.check_database(pg.url)
    finally:
        pg.tool("psql", "-d", "postgres", "-c", "ALTER DATABASE mlflow_aside RENAME TO mlflow")
    stack_code.check_database(pg.url + "/")  # both databases there: passes (a trailing "/" names no database)


def test_malformed_urls_and_a_missing_driver_are_clear(monkeypatch, tmp_path):
    for bad, why in (("mysql://u@h:3306", "not a postgresql:// URL"), ("postgresql://u@h:5432/mine", "names a "
                     "database"), ("postgresql://h:5432", "needs a user and a host"),
                     ("postgresql://u@h:5432?sslmode=require", "PGSSLMODE")):
        with pytest.raises(stack_code.StackError, match=why):
            stack_code.database_uris(bad)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real(name, *a))
    settings = stack_code.StackSettings(home=tmp_path, database="postgresql://u@127.0.0.1:1",
                                        prefect_port=free_port(), mlflow_port=free_port())
    with pytest.raises(stack_code.StackError, match="driver psycopg2 is not installed(.|\n)*pip install psycopg2"):
        stack_code.up(settings, say=lambda _: None)
    with pytest.raises(stack_code.StackError, match="at least one worker"):
        stack_code.up(stack_code.StackSettings(home=tmp_path, workers=0), say=lambda _: None)
    assert not list((tmp_path / "stack").glob("*.pid"))


# --------------------------------------------------------------------------- the stack on PostgreSQL + S3


def test_up_runs_both_servers_on_postgresql_with_two_workers(team, pg):
    assert set(team.pids()) == {"mlflow", "prefect", "worker", "worker-2"}
    workers = httpx.post(f"{team.api}/work_pools/{stack_code.WORK_POOL}/workers/filter", json={}).json()
    assert sum(w["status"] == "ONLINE" for w in workers) == 2
    assert "2 workers online" in team.up_output and f"{pg.url}/mlflow" in team.up_output.replace("+psycopg2", "")
    # Both servers keep their state in PostgreSQL, none in SQLite files under TUNEOPS_HOME.
    assert int(sql(pg, "prefect", "select count(*) from deployment")[0]) >= 5
    assert "Default" in sql(pg, "mlflow", "select name from experiments")
    assert not list(team.home.rglob("*.db")), "a SQLite file was created beside the PostgreSQL stack"
    # The backend URIs travel in the environment, not on command lines (the process list, the pid files).
    for path in (team.home / "stack").glob("*.pid"):
        assert "postgresql" not in " ".join(json.loads(path.read_text())["argv"])
    again = team.cli("up", "--database", pg.url, "--workers", "2", "--prefect-port", team.prefect_url.rsplit(":")[-1],
                     "--mlflow-port", team.mlflow_url.rsplit(":")[-1], "--mlflow-artifacts", f"s3://{BUCKET}/mlflow")
    assert again.returncode == 0 and again.stdout.count("already running") == 4, again.stdout + again.stderr


@pytest.fixture(scope="module")
def champion_run(team, tiny_model, company_csv) -> dict:
    """A train_model/manual deployment run of the tiny model, then a score_batch run writing the production log
    that monitoring reads later."""
    run = wait_for_run(team.api, start(team, "train_model/manual",
                                       {"config": config_of(company_csv, tiny_model, MODEL)}))
    scored = wait_for_run(team.api, start(team, "score_batch/nightly", {
        "config": config_of(company_csv, tiny_model, MODEL), "input": company_csv,
        "output": str(team.home / "predictions")}))
    assert scored["state"]["type"] == "COMPLETED", scored["state"]
    return run


def test_a_deployment_run_trains_gates_and_registers_in_postgresql_and_s3(team, pg, champion_run):
    from tuneops.data.storage import s3_client

    assert champion_run["state"]["type"] == "COMPLETED", champion_run["state"]
    client = mlflow_client(team)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.tags["tuneops.gate.passed"] == "True"
    assert MODEL in sql(pg, "mlflow", "select name from registered_models")
    aliases = sql(pg, "mlflow", f"select alias || '=' || version from registered_model_aliases where name = '{MODEL}'")
    assert "champion=1" in aliases, aliases
    keys = [o["Key"] for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    assert any(k.endswith(f"{champion.run_id}/artifacts/gate/decision.json") for k in keys), keys[:20]
    assert not (team.home / "mlartifacts").exists(), "artifacts must go to S3 only"
    assert list((team.home / "predictions").rglob("*.jsonl")), "score_batch wrote no production log"


def test_training_scoring_monitoring_and_promotion_at_the_same_time(team, pg, champion_run, tiny_model, company_csv):
    """Two workers; at once: two manual training runs, score_batch, monitor_production and promote_model.
    All complete, no lock error, the two trainings do not overlap, no run is executed twice."""
    client = mlflow_client(team)
    v1 = client.get_model_version(MODEL, "1")
    # A second version of the same model to promote (same logged model and tags, registered through the server).
    model_id = v1.source.removeprefix("models:/")  # MLflow 3: the source is the logged model
    v2 = client.create_model_version(MODEL, v1.source, run_id=v1.run_id, tags=v1.tags, model_id=model_id)
    assert v2.version == "2"
    runs = {
        "train-a": start(team, "train_model/manual", {"config": config_of(company_csv, tiny_model, CONCURRENT)}),
        "train-b": start(team, "train_model/manual", {"config": config_of(company_csv, tiny_model, CONCURRENT)}),
        "score": start(team, "score_batch/nightly", {"config": config_of(company_csv, tiny_model, MODEL),
                                                     "input": company_csv, "output": str(team.home / "scored")}),
        "monitor": start(team, "monitor_production/scheduled", {"config": config_of(company_csv, tiny_model, MODEL),
                                                                "predictions": str(team.home / "predictions")}),
        "promote": start(team, "promote_model/manual", {"name": MODEL, "version": "2", "reason": "concurrency test"}),
    }
    finished = {name: wait_for_run(team.api, run_id, timeout=600) for name, run_id in runs.items()}
    states = {name: (run["state"]["type"], run["state"].get("message")) for name, run in finished.items()}
    assert all(state == "COMPLETED" for state, _ in states.values()), states

    # The training queue (limit 1) held across both workers: no two trainings ran side by side.
    spans = sorted(interval(finished[name]) for name in ("train-a", "train-b"))
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert end <= next_start, f"two training runs overlapped: {spans}"
    # Work ran while training ran: scoring or monitoring overlapped a training run (the second worker's share).
    others = [interval(finished[name]) for name in ("score", "monitor", "promote")]
    assert any(s < t_end and t_start < e for s, e in others for t_start, t_end in spans), (others, spans)

    assert sorted(mv.version for mv in client.search_model_versions(f"name = '{CONCURRENT}'")) == ["1", "2"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert client.get_model_version_by_alias(MODEL, "previous").version == "1"
    assert list((team.home / "scored").rglob("*.jsonl"))
    monitoring = client.search_runs([client.get_experiment_by_name("tuneops-monitoring").experiment_id])
    assert monitoring and monitoring[0].info.status == "FINISHED"
    for log in (team.home / "stack").glob("*.log"):
        found = LOCK_ERRORS.findall(log.read_text(errors="replace"))
        assert not found, f"{log.name}: {found[:3]}"
    # Both workers poll the same queues; a run both pick up is executed once (the loser's PENDING is refused).
    executed: dict[str, list[str]] = {}
    for log in (team.home / "stack").glob("worker*.log"):
        text = log.read_text(errors="replace")
        for run_id in re.findall(r"submitting flow run '([0-9a-f-]+)'", text):
            if f"Aborted submission of flow run '{run_id}'" not in text:
                executed.setdefault(run_id, []).append(log.stem)
    assert {run_id for run_id, by in executed.items() if len(by) > 1} == set(), executed
    assert set(runs.values()) <= set(executed)


def test_down_stops_everything_and_the_databases_keep_the_registry(team, pg):
    from tuneops.infra.stack import _children

    pids = team.pids()
    children = [c for name in ("worker", "worker-2") for c in _children(pids[name])]
    proc = team.cli("down", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["stopped"] * 4, proc.stdout
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not [pid for pid in children if alive(pid)]
    for url in (team.mlflow_url, team.api):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    # The state outlives the processes: it is in PostgreSQL, ready for the next `up`.
    assert sql(pg, "mlflow", f"select version from model_versions where name = '{MODEL}' order by version") == [
        "1", "2"]
    completed = "select count(*) from flow_run where state_type = 'COMPLETED'"
    assert int(sql(pg, "prefect", completed)[0]) >= 7  # the 2 runs of the champion fixture + the 5 at once


def test_the_operating_guides_backup_restore_and_migration_commands(team, pg, tmp_path):
    """docs/guides/backups-upgrades.md: pg_dump -Fc each database, recreate it empty, pg_restore; then both migrations
    (no-ops at the installed versions, but the commands and URIs are the documented ones)."""
    import subprocess
    import sys

    before = {"mlflow": sql(pg, "mlflow", "select name, version from model_versions order by name, version"),
              "prefect": sql(pg, "prefect", "select id from flow_run order by id")}
    for database in ("mlflow", "prefect"):
        dump = str(tmp_path / f"{database}.dump")
        pg.tool("pg_dump", "-Fc", "-f", dump, database)
        pg.tool("dropdb", database)
        pg.tool("createdb", database)
        assert sql(pg, database, "select count(*) from pg_tables where schemaname = 'public'") == ["0"]
        pg.tool("pg_restore", "-d", database, "--no-owner", dump)
    assert sql(pg, "mlflow", "select name, version from model_versions order by name, version") == before["mlflow"]
    assert sql(pg, "prefect", "select id from flow_run order by id") == before["prefect"]
    uris = stack_code.database_uris(pg.url)
    bin_dir = os.path.dirname(sys.executable)
    env = {**team.env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": uris["prefect"]}
    for argv in ([f"{bin_dir}/mlflow", "db", "upgrade", uris["mlflow"]],
                 [f"{bin_dir}/prefect", "server", "database", "upgrade", "-y"]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
