"""`make up MLFLOW_ARTIFACTS=s3://...`: the MLflow server of the local stack stores artifacts in S3
(a real S3-compatible server on loopback, reached through the standard AWS variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, make_bucket
from tests.infra.conftest import alive, free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_mlflow_artifacts_go_to_s3(s3_endpoint, tmp_path):
    from mlflow import MlflowClient

    from tuneops.storage import s3_client

    make_bucket("stack-artifacts")
    env = {**os.environ, "TUNEOPS_HOME": str(tmp_path)}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    mlflow_port = free_port()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=600)

    try:
        up = cli("up", "--prefect-port", str(free_port()), "--mlflow-port", str(mlflow_port),
                 "--mlflow-artifacts", "s3://stack-artifacts/mlflow")
        assert up.returncode == 0, up.stdout + up.stderr
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        run = client.create_run(client.create_experiment("s3-artifacts"))
        client.log_text(run.info.run_id, "stored in S3", "note.txt")
        keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket="stack-artifacts")["Contents"]]
        assert f"mlflow/{run.info.experiment_id}/{run.info.run_id}/artifacts/note.txt" in keys
        assert not (tmp_path / "mlartifacts").exists(), "nothing may land in the local artifact folder"
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "stack").glob("*.pid")]
        down = cli("down")
        assert down.returncode == 0 and not [p for p in pids if alive(p)], down.stdout + down.stderr
