"""`make up MLFLOW_ARTIFACTS=s3://...`: the MLflow server of the local stack stores artifacts in S3
(a real S3-compatible server on loopback, reached through the standard AWS variables), and an S3 endpoint that
refuses connections for a few seconds loses nothing: checkpoint mirroring and MLflow artifact uploads retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_bucket
from tests.infra.conftest import alive
from tuneops.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class RestartableS3:
    """moto's S3 server in this process on a fixed loopback port. Its buckets live in moto's in-process backends,
    so stopping the HTTP server (its socket closed: connections are refused) and starting it again on the same
    port is an endpoint outage that loses no stored object, as a real S3 endpoint's restart would be."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.server._server.server_close()

    def outage(self, seconds: float) -> threading.Thread:
        """Refuse connections now; serve again after ``seconds`` (in a background thread; join it)."""
        self.stop()
        restart = threading.Timer(seconds, self.start)
        restart.start()
        return restart


@pytest.fixture(scope="module")
def s3(monkeypatch_module) -> Iterator[RestartableS3]:
    server = RestartableS3()
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(key, value)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _refused(url: str) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) != 0


def test_checkpoint_mirroring_rides_out_an_endpoint_outage(s3, tmp_path):
    """The Trainer's mirror callback copies a checkpoint while the endpoint refuses connections for 8 s: longer than
    botocore's own retries span (5 attempts: about 1-3 s against a refused port here), so tuneops' retries carry it."""
    from types import SimpleNamespace

    from tuneops.data import storage
    from tuneops.training.checkpoints import checkpoint_mirror

    make_bucket("mirror")
    out = tmp_path / "checkpoints"
    checkpoint = out / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    files = {"model.safetensors": os.urandom(200_000), "optimizer.pt": os.urandom(50_000),
             "trainer_state.json": b'{"epoch": 2.0}'}
    for name, data in files.items():
        (checkpoint / name).write_bytes(data)
    mirror = checkpoint_mirror("s3://mirror/run")  # built first: it imports transformers, which takes a while
    restart = s3.outage(8)
    assert _refused(s3.url)
    started = time.monotonic()
    mirror.on_save(SimpleNamespace(output_dir=str(out)),
                                                 SimpleNamespace(is_world_process_zero=True, global_step=8), None)
    restart.join()
    assert time.monotonic() - started >= 7, "the upload cannot have finished while the endpoint was down"
    assert sorted(storage.list_keys("s3://mirror/run")) == sorted(
        [f"checkpoint-8/{n}" for n in files] + ["checkpoint-8/_COMPLETE"])
    for name, data in files.items():
        assert storage.read_bytes(storage.Source(f"s3://mirror/run/checkpoint-8/{name}")) == data


def test_mlflow_artifacts_go_to_s3_and_survive_an_outage(s3, tmp_path):
    from mlflow import MlflowClient

    from tuneops.data.storage import s3_client

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
        # The endpoint refuses connections for 4 s while an artifact goes up through the MLflow server: the server
        # answers 5xx meanwhile, the client retries, and the artifact arrives whole.
        model = Path(tmp_path / "weights.bin")
        model.write_bytes(os.urandom(300_000))
        restart = s3.outage(4)
        client.log_artifact(run.info.run_id, str(model), "model")
        restart.join()
        stored = s3_client().get_object(Bucket="stack-artifacts", Key=f"mlflow/{run.info.experiment_id}/"
                                        f"{run.info.run_id}/artifacts/model/weights.bin")["Body"].read()
        assert stored == model.read_bytes()
        assert not (tmp_path / "mlartifacts").exists(), "nothing may land in the local artifact folder"
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "stack").glob("*.pid")]
        down = cli("down")
        assert down.returncode == 0 and not [p for p in pids if alive(p)], down.stdout + down.stderr
