"""Kill a real training run with SIGKILL mid-way; the next run resumes from its checkpoint and finishes
with the metrics an uninterrupted run gets (a classifier; a causal LM resumes through the same loop).

Each `tuneops train` here is a separate process with its own TUNEOPS_HOME, so it starts its own
local Prefect API and SQLite MLflow store, as a user's would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration]
# Killed once two epochs are checkpointed: four more are the margin that the kill lands before the run finishes
# (asserted), and the rest of the run is what the resumed and the uninterrupted runs are compared on.
EPOCHS = 6


def _config(path: Path, data: str, base: str, name: str, checkpoint_uri: str | None = None) -> Path:
    path.write_text(yaml.safe_dump({
        "data": {"path": data, "label_column": "category"},
        "validation": {"min_rows_per_class": 10},
        "model": {"base": base, "max_length": 32},
        "training": {"method": "full", "epochs": EPOCHS, "learning_rate": 0.003, "batch_size": 8, "seed": 7,
                     "checkpoint_uri": checkpoint_uri},
        "gate": {"floors": {"accuracy": 0.0}},
        "registry": {"model_name": name, "experiment": "resume"},
    }))
    return path


def _train(home: Path, config: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_HOME": str(home)}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    return subprocess.Popen([sys.executable, "-m", "tuneops.cli", "train", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _checkpoint_epochs(home: Path) -> list[float]:
    epochs = []
    for state in (home / "checkpoints").glob("*/checkpoint-*/trainer_state.json"):
        try:
            epochs.append(json.loads(state.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            pass  # being written right now
    return epochs


def _test_metrics(home: Path, name: str) -> dict[str, float]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    version = client.get_model_version_by_alias(name, "challenger")
    return client.get_run(version.run_id).data.metrics


def _kill_after_two_epochs_then_resume(home: Path, config: Path, epochs: int) -> None:
    """SIGKILL a `tuneops train` once two epochs are checkpointed; the rerun must resume, finish and clean up."""
    first = _train(home, config, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(e >= 2 for e in _checkpoint_epochs(home)):
        assert first.poll() is None, f"training ended before it could be killed:\n{first.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert max(_checkpoint_epochs(home)) < epochs, "the run was killed after it had finished training"

    second = _train(home, config)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "resuming from" in out and "checkpoint-" in out
    assert not list((home / "checkpoints").glob("*/checkpoint-*")), "checkpoints are removed after success"


def test_sigkilled_training_resumes_and_matches_uninterrupted(tmp_path, tiny_model, company_csv):
    home = tmp_path / "home"
    config = _config(tmp_path / "resume.yaml", company_csv, tiny_model, "resumed")

    _kill_after_two_epochs_then_resume(home, config, epochs=EPOCHS)
    resumed = _test_metrics(home, "resumed")

    reference_home = tmp_path / "reference"
    third = _train(reference_home, _config(tmp_path / "reference.yaml", company_csv, tiny_model, "resumed"))
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0, out[-3000:]
    assert "resuming from" not in out
    assert "baseline     (TF-IDF + logistic regression, accuracy): " in out  # the summary's lift line
    uninterrupted = _test_metrics(reference_home, "resumed")

    for metric in ("test_accuracy", "test_macro_f1", "best_validation_accuracy"):
        assert resumed[metric] == pytest.approx(uninterrupted[metric], abs=0.02), (metric, resumed, uninterrupted)


def test_resume_on_another_machine_from_checkpoints_mirrored_to_s3(tmp_path, tiny_model, company_csv, s3_endpoint):
    """The killed run mirrored its checkpoints to S3; a run with an empty working folder resumes from there."""
    from tests.conftest import make_bucket
    from tuneops.data import storage

    make_bucket("checkpoints")
    config = _config(tmp_path / "s3.yaml", company_csv, tiny_model, "resumed-s3", "s3://checkpoints/team")
    first_machine = tmp_path / "first"
    first = _train(first_machine, config, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(k.endswith("/_COMPLETE") for k in storage.list_keys("s3://checkpoints/team")):
        assert first.poll() is None, f"training ended before it could be killed:\n{first.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no mirrored checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    second = _train(tmp_path / "second", config)  # a fresh working folder: nothing local to resume from
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "resuming from" in out
    assert storage.list_keys("s3://checkpoints/team") == [], "the mirror is cleaned up after success"


def test_sigkilled_causal_lm_training_resumes_through_the_flow(tmp_path, tiny_causal_lm, instruction_csv):
    """The causal LM trains in the same loop as a classifier: killed mid-way, the rerun resumes and registers."""
    home = tmp_path / "home"
    config = tmp_path / "causal.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"path": instruction_csv, "prompt_column": "prompt", "response_column": "response"},
        "model": {"base": tiny_causal_lm, "task": "causal_lm", "max_length": 48, "max_new_tokens": 6},
        "training": {"method": "full", "epochs": EPOCHS, "learning_rate": 0.003, "batch_size": 8, "seed": 7,
                     "warmup_ratio": 0.0},
        "registry": {"model_name": "resumed-causal", "experiment": "resume"},
    }))
    _kill_after_two_epochs_then_resume(home, config, epochs=EPOCHS)
    metrics = _test_metrics(home, "resumed-causal")
    assert metrics["epochs_run"] == pytest.approx(EPOCHS) and metrics["best_validation_loss"] < 1.0, metrics
    assert 0.0 <= metrics["test_exact_match"] <= 1.0 and "test_rouge_l" in metrics
