"""Thin helpers over MLflow tracking, keyed by run id so they work from any task thread."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneops import settings


def client():  # noqa: ANN201 - MlflowClient, imported lazily
    from mlflow import MlflowClient

    return MlflowClient()


def experiment_id(name: str) -> str:
    """The experiment's id, creating it (with artifacts under TUNEOPS_HOME for a local store)."""
    import mlflow

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (settings.artifact_root() / name).as_uri()
    return c.create_experiment(name, artifact_location=location)


@functools.cache
def code_version() -> str:
    """The git commit of the code that runs, with '-dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@contextlib.contextmanager
def run(experiment: str, run_name: str, tags: dict[str, str] | None = None,
        parent_run_id: str | None = None) -> Iterator[str]:
    """Open an MLflow run for the length of a flow (or a trial, nested under its parent); FAILED if it raises."""
    c = client()
    tags = {**(tags or {}), **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
    r = c.create_run(experiment_id(experiment), run_name=run_name, tags=tags)
    status = "FAILED"
    try:
        yield r.info.run_id
        status = "FINISHED"
    finally:
        c.set_terminated(r.info.run_id, status=status)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:500]
    return out


_NOT_IN_NAMES = re.compile(r"[^\w\-. :/]")  # MLflow's rule for metric, param and tag names


def key(name: str) -> str:
    """``name`` as MLflow accepts it: company labels such as 'reverted_card_payment?' become per-class
    metric names, and MLflow refuses anything but word characters, '-', '.', ' ', ':' and '/'."""
    return _NOT_IN_NAMES.sub("_", name)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(key(k), v) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i:i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(key(k), float(v), now, step or 0) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow's limit per batch
        client().log_batch(run_id, metrics=items[i:i + 1000])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(key(k), str(v)) for k, v in tags.items()])


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def log_artifacts(run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
    client().log_artifacts(run_id, str(local_dir), artifact_path)


def dataset_source(uri: str) -> Any:
    """The MLflow dataset source of a data location, named explicitly: given a plain string, MLflow guesses its
    kind, and a local path fits two of its kinds ('' and 'file' schemes) equally. A scheme MLflow has no source
    kind for stays a string (MLflow's guess)."""
    import json
    from urllib.parse import urlparse

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.exceptions import MlflowException

    scheme = urlparse(uri).scheme
    try:
        return get_dataset_source_from_json(json.dumps({"uri": uri}), scheme if len(scheme) > 1 else "local")
    except MlflowException:
        return uri


def log_datasets(run_id: str, frames: dict[str, tuple[Any, str, str]], targets: str | None = None) -> None:
    """Record datasets as MLflow dataset inputs: name -> (DataFrame, source URI, fingerprint)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for name, (frame, source, digest) in frames.items():
        dataset = mlflow.data.from_pandas(frame, source=dataset_source(source), targets=targets, name=name,
                                          digest=digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", name)]))
    client().log_inputs(run_id, datasets=inputs)
