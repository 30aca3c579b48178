"""Server faults on the real stack (`tuneops up`: MLflow server, Prefect server, process worker), one module-scoped
stack for all of them, runs started through the train_model deployments as the UI starts them:

- the Prefect server restarts while a training run is in flight: the run ends in a state that tells the truth;
- the MLflow server is killed while a run registers its model (held at a test-only pause point, so no race) and
  started again: the registry holds a complete version, with every tag, its model card and its aliases;
- the worker is killed (with the flow run it executes) mid-training: the heartbeat automation marks the run
  Crashed, and a rerun through the deployment resumes from its last checkpoint.

Tests run in file order; each leaves the stack up and healthy for the next.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.conftest import tiny_config
from tests.infra.conftest import alive, wait_for_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Heartbeats every 30 s (Prefect's minimum); a run silent for 50 s is crashed (the default is 3 heartbeats).
STACK_ENV = {"TUNEOPS_HEARTBEAT_SECONDS": "30", "TUNEOPS_ZOMBIE_AFTER_SECONDS": "50"}


def _ports(stack) -> list[str]:
    return ["--prefect-port", stack.prefect_url.rsplit(":", 1)[1], "--mlflow-port", stack.mlflow_url.rsplit(":", 1)[1]]


def _up_again(stack) -> None:
    """What an operator does after a fault: `tuneops up` starts what is not running and keeps the rest."""
    proc = stack.cli("up", *_ports(stack))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _start(stack, deployment: str, config, env: dict[str, str] | None = None) -> str:
    dep = httpx.get(f"{stack.api}/deployments/name/{deployment}").json()
    body: dict = {"parameters": {"config": config.model_dump(mode="json")}}
    if env:
        body["job_variables"] = {"env": env}
    # Prefect answers 503 while its SQLite database is locked by another writer (a busy 2-core machine); its own
    # client and UI retry that, so this caller does too, for up to 30 s.
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(f"{stack.api}/deployments/{dep['id']}/create_flow_run", json=body)
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _wait(what: str, check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.2)


def _checkpoints(stack) -> list:
    return list((stack.home / "checkpoints").glob("*/checkpoint-*/trainer_state.json"))


def _checkpoint_epochs(stack, exclude: set | frozenset = frozenset()) -> list[float]:
    epochs = []
    for state in [p for p in _checkpoints(stack) if p.parent.parent not in exclude]:
        try:
            epochs.append(json.loads(state.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            pass  # being written right now
    return epochs


def _logs(stack, run_id: str) -> str:
    logs = httpx.post(f"{stack.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                        "limit": 200}).json()
    return "\n".join(entry["message"] for entry in logs)


def test_prefect_server_restart_mid_training_ends_in_a_truthful_state(stack, tiny_model, company_csv):
    from mlflow import MlflowClient

    from tuneops.infra.stack import StackSettings, stop_service

    name = "fault-prefect-restart"
    run_id = _start(stack, "train_model/manual", tiny_config(company_csv, tiny_model, name, training={"epochs": 6}))
    _wait("a first checkpoint", lambda: _checkpoints(stack))
    assert stop_service(StackSettings(home=stack.home), "prefect")
    time.sleep(3)
    _up_again(stack)
    run = wait_for_run(stack.api, run_id)
    versions = MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{name}'")
    if run["state"]["type"] == "COMPLETED":  # the flow process rode out the outage on its client's retries
        assert len(versions) == 1 and versions[0].tags["tuneops.registration"] == "complete"
    else:  # it gave up: then it says so, and nothing was registered
        assert run["state"]["type"] in ("CRASHED", "FAILED"), run["state"]
        assert versions == [], "a run that did not complete may not leave a version"
    # The worker reconnected by itself: it is online again and runs the next test's flow.
    _wait("the worker back online", lambda: any(
        w["status"] == "ONLINE" for w in httpx.post(f"{stack.api}/work_pools/tuneops-process/workers/filter",
                                                    json={}).json()), timeout=120)


def test_mlflow_killed_while_registering_leaves_a_complete_version(stack, tiny_model, company_csv):
    from mlflow import MlflowClient

    from tuneops import faults
    from tuneops.infra.stack import StackSettings, stop_service

    name = "fault-register"
    fault_dir = stack.home / "faults"
    marker = fault_dir / faults.marker("register:after_create_version").name
    run_id = _start(stack, "train_model/manual", tiny_config(company_csv, tiny_model, name),
                    env={"TUNEOPS_FAULT_PAUSE": "register:after_create_version", "TUNEOPS_FAULT_DIR": str(fault_dir)})
    _wait("the registration to reach its pause point", marker.exists)
    client = MlflowClient(stack.mlflow_url)
    [pending] = client.search_model_versions(f"name = '{name}'")
    assert pending.tags["tuneops.registration"] == "pending" and not pending.aliases
    assert stop_service(StackSettings(home=stack.home), "mlflow")
    marker.unlink()  # the registration goes on against a dead server
    time.sleep(3)
    _up_again(stack)
    run = wait_for_run(stack.api, run_id)
    assert run["state"]["type"] == "COMPLETED", (run["state"], _logs(stack, run_id)[-3000:])
    [version] = client.search_model_versions(f"name = '{name}'")
    assert version.version == pending.version and version.tags["tuneops.registration"] == "complete"
    assert version.tags == {**pending.tags, "tuneops.registration": "complete", **{
        k: v for k, v in version.tags.items() if k.startswith("tuneops.promot")}}, "a provenance tag is missing"
    assert version.description and "MODEL_CARD.md" in {
        a.path for a in client.list_artifacts(version.run_id)}
    aliases = client.get_registered_model(name).aliases
    assert aliases["challenger"] == str(version.version)
    # The alias decision is the gate's: champion moved to this version exactly when it passed (no earlier champion).
    assert aliases.get("champion") == (str(version.version) if version.tags["tuneops.gate.passed"] == "True" else None)
    assert client.get_run(version.run_id).info.status == "FINISHED"


def test_killed_worker_crashes_the_run_and_a_rerun_resumes(stack, tiny_model, company_csv):
    from tuneops.infra.stack import _children

    name = "fault-worker"
    config = tiny_config(company_csv, tiny_model, name, training={"epochs": 6})
    earlier = {p.parent.parent for p in _checkpoints(stack)}  # another test's, if its run was interrupted
    run_id = _start(stack, "train_model/manual", config)
    _wait("two epochs checkpointed", lambda: any(e >= 2 for e in _checkpoint_epochs(stack, earlier)))
    worker = stack.pids()["worker"]
    victims = [worker, *_children(worker)]
    assert len(victims) > 1, "the worker should be running the flow in a child process"
    for pid in victims:  # the machine is gone: the worker and the flow run's process die at once
        os.kill(pid, signal.SIGKILL)
    _wait("the worker and its flow run to die", lambda: not any(alive(p) for p in victims), timeout=30)
    crashed = wait_for_run(stack.api, run_id, timeout=240)
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    assert "No heartbeat" in crashed["state"]["message"], crashed["state"]["message"]

    _up_again(stack)  # a new worker
    rerun = wait_for_run(stack.api, _start(stack, "train_model/manual", config))
    assert rerun["state"]["type"] == "COMPLETED", (rerun["state"], _logs(stack, rerun["id"])[-3000:])
    assert "resuming from" in _logs(stack, rerun["id"]), "the rerun started from scratch"
    from mlflow import MlflowClient

    [version] = MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{name}'")
    assert version.tags["tuneops.registration"] == "complete"
