"""Registry invariants on a real MLflow store (the session's SQLite database), driven by `tuneops` processes:
racing promotions stay consistent, promoting the champion again changes nothing and says so, a half-written
(pending) version can never be promoted, and a lock left by a dead promoter is broken once stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def store() -> str:
    """The session's SQLite tracking store (tests/conftest.py): a real database shared by every process here,
    whose unique constraints are what the alias lock relies on, as a tracking server's database is."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert uri.startswith("sqlite:")
    return uri


def _versions(name: str, count: int, **tags: str) -> None:
    """A registered model with ``count`` versions that passed their gate (a logged text file stands for a model)."""
    from mlflow import MlflowClient

    c = MlflowClient()
    c.create_registered_model(name)
    experiment = c.get_experiment_by_name("invariants") or c.create_experiment("invariants")
    experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
    for _ in range(count):
        run = c.create_run(experiment_id)
        c.set_terminated(run.info.run_id)
        c.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id,
                               tags={"tuneops.gate.passed": "True", "tuneops.gate.reason": "passed", **tags})


def _promote(name: str, version: str, tmp_path: Path, pause: bool = False) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_FAULT_DIR": str(tmp_path), "TUNEOPS_FAULT_NOTE": "alias_lock:waiting"}
    env.pop("PREFECT_API_URL", None)
    if pause:
        env["TUNEOPS_FAULT_PAUSE"] = "promote:after_read_champion"
    return subprocess.Popen([sys.executable, "-m", "tuneops.cli", "promote", name, version, "--reason", "race"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_racing_promotions_from_two_processes_stay_consistent(store, tmp_path):
    """A reads champion v1 and is held there; B promotes v3 meanwhile. Without the lock B would also read v1 and
    the end state would be champion v2, previous v1: v3 promoted and lost. With it B waits, then replaces v2."""
    from tuneops import faults
    from tuneops.registry import versions as registry

    name = "inv-race"
    _versions(name, 3)
    assert registry.promote(name, "1", "first").changed
    first = _promote(name, "2", tmp_path, pause=True)
    marker = tmp_path / faults.marker("promote:after_read_champion").name
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first promotion never reached its pause point"
        time.sleep(0.1)
    second = _promote(name, "3", tmp_path)
    # B either finishes on its own (no lock: it read v1 too, and the end state below is wrong) or blocks on the lock.
    waiting = tmp_path / faults.marker("alias_lock:waiting", ".reached").name
    while second.poll() is None and not waiting.exists():
        assert time.monotonic() < deadline + 90, "the second promotion neither finished nor waited for the lock"
        time.sleep(0.1)
    marker.unlink()
    out_a, err_a = first.communicate(timeout=120)
    out_b, err_b = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err_a, err_b)
    assert json.loads(out_a)["previous"] == "1" and json.loads(out_b)["previous"] == "2"
    assert registry.alias_version(name, "champion") == "3"
    assert registry.alias_version(name, "previous") == "2"
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version(name, "3").tags["tuneops.promoted_from"] == "2"
    assert not MlflowClient().search_registered_models(f"name = '{registry._lock_name(name)}'"), "lock left behind"


def test_promoting_the_champion_again_says_so_and_changes_nothing(store, tmp_path):
    from mlflow import MlflowClient

    from tuneops.registry import versions as registry

    name = "inv-again"
    _versions(name, 2)
    registry.promote(name, "1", "first")
    registry.promote(name, "2", "second")
    before = MlflowClient().get_model_version(name, "2").tags
    proc = _promote(name, "2", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"model": name, "champion": "2", "previous": "1", "changed": False}
    assert "already the champion; nothing changed" in err and "Traceback" not in err
    assert registry.alias_version(name, "champion") == "2" and registry.alias_version(name, "previous") == "1"
    assert MlflowClient().get_model_version(name, "2").tags == before, "no audit tag may be rewritten"


def test_a_pending_version_cannot_be_promoted(store, tmp_path):
    from tuneops.registry import versions as registry

    name = "inv-pending"
    _versions(name, 1)
    from mlflow import MlflowClient

    c = MlflowClient()
    c.set_model_version_tag(name, "1", registry.REGISTRATION_TAG, registry.PENDING)
    proc = _promote(name, "1", tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "half-written registration" in err and "Traceback" not in err
    assert registry.alias_version(name, "champion") is None


def test_a_stale_lock_of_a_dead_promoter_is_broken(store, monkeypatch):
    from mlflow import MlflowClient

    from tuneops.registry import versions as registry

    name = "inv-stale"
    _versions(name, 1)
    MlflowClient().create_registered_model(registry._lock_name(name), tags={
        "tuneops.lock.holder": "dead-host:1:0", "tuneops.lock.acquired_at": f"{time.time() - 3600:.3f}"})
    assert registry.promote(name, "1", "after a crash").changed
    assert registry.alias_version(name, "champion") == "1"
    # A fresh lock is respected: the promoter waits, then gives up with the holder's name and the fix.
    MlflowClient().create_registered_model(registry._lock_name(name), tags={
        "tuneops.lock.holder": "busy-host:2:0", "tuneops.lock.acquired_at": f"{time.time():.3f}"})
    with pytest.raises(registry.RegistryError, match="busy-host:2:0.*delete the registered model"):
        with registry.alias_lock(name, wait_s=1):
            pass


def test_the_next_registration_drops_a_pending_version_whose_run_ended(store):
    """A run that died between creating its version and completing it leaves a pending version; the next
    registration of the model deletes it, but keeps one whose run is still registering."""
    from mlflow import MlflowClient

    from tuneops.registry import versions as registry

    name = "inv-drop"
    _versions(name, 2, **{registry.REGISTRATION_TAG: registry.PENDING})
    c = MlflowClient()
    c.update_run(c.get_model_version(name, "2").run_id, status="RUNNING")
    registry._drop_pending(name)
    assert [str(v.version) for v in c.search_model_versions(f"name = '{name}'")] == ["2"]
