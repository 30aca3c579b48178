"""Versions registered by earlier tuneops code still load and predict with today's.

Every version committed under tests/fixtures/registry_formats/ (v1: as commit 053c986 wrote them: pickled pyfuncs
that name ``tuneops.serving.TextClassifierModel`` & co., artifact folders in that layout) is registered into the
session's store by the ``old_format_versions`` fixture, then loaded through MLflow (``models:/NAME/N``) and through
tuneops' scoring path (the function `tuneops predict --version N` calls, and once the command itself), and must
answer what it answered when it was registered.

It proved that the library's move into subpackages kept old versions working (it was written against the modules
before the move, through MLflow's API and the `tuneops` command only).
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

import tuneops
from tests.conftest import run_cli
from tests.fixtures.registry_formats import formats, versions_of

IDS = [f"{fmt.name}/{folder.name}" for fmt in formats() for folder in versions_of(fmt)]


def find(versions: list, version_id: str):
    return next(v for v in versions if v.id == version_id)


def assert_as_registered(old, frame: pd.DataFrame) -> None:
    """The family's output columns, each row what the version answered when it was registered."""
    expected = old.record["expected"]
    assert len(frame) == len(expected)
    for got, want in zip(frame.to_dict(orient="records"), expected, strict=True):
        for column, value in want.items():
            if isinstance(value, float):
                assert math.isclose(got[column], value, rel_tol=1e-4, abs_tol=1e-5), (old.id, column, got, want)
            else:
                assert got[column] == value, (old.id, column, got, want)
    if old.task == "classification":
        model_dir = old.folder / "model/artifacts/model"  # merged weights, or a frozen base/ plus an adapter/
        config = next(p for p in (model_dir / "config.json", model_dir / "base/config.json") if p.is_file())
        assert set(frame["label"]) <= set(json.loads(config.read_text())["id2label"].values())
        assert frame["confidence"].between(0, 1).all()
    elif old.task == "causal_lm":
        assert set(frame["finish_reason"]) <= {"stop", "length"}
        assert (frame["latency_ms"] >= 0).all()


@pytest.mark.parametrize("version_id", IDS)
def test_an_old_version_loads_and_predicts_through_mlflow(old_format_versions, version_id):
    old = find(old_format_versions, version_id)
    model = mlflow.pyfunc.load_model(old.uri)
    # The pickle was resolved against today's tuneops, not the copy of the old package the version carries in
    # code/ (MLflow puts that on sys.path, but the installed tuneops is already imported).
    source = Path(inspect.getfile(type(model.unwrap_python_model()))).resolve()
    assert source.is_relative_to(Path(tuneops.__file__).resolve().parent), source
    column = old.record["probe"]["column"]
    out = model.predict(pd.DataFrame({column: old.record["probe"]["inputs"]}))
    assert list(out.columns) == old.outputs
    assert_as_registered(old, out)


def _predict_probe(old, tmp_path, cli: bool) -> pd.DataFrame:
    """tuneops' own scoring path with the config the version was trained with (its data and base paths are gone:
    predicting reads neither): `tuneops predict --version N` in a process of its own, or the function it calls."""
    column = old.record["probe"]["column"]
    inputs = tmp_path / "inputs.csv"
    pd.DataFrame({column: old.record["probe"]["inputs"]}).to_csv(inputs, index=False)
    output = tmp_path / "predictions.csv"
    config = old.folder / "config.yaml"
    if cli:
        proc = run_cli("predict", "--config", str(config), "--input", str(inputs), "--output", str(output),
                       "--version", old.version)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        from tuneops.config import load_config
        from tuneops.serving.scoring import predict_file

        predict_file(load_config(config), str(inputs), str(output), version=old.version)
    return pd.read_csv(output, keep_default_na=False)


@pytest.mark.parametrize("version_id", IDS)
def test_tuneops_scoring_predicts_with_an_old_version(old_format_versions, version_id, tmp_path):
    old = find(old_format_versions, version_id)
    _check_predictions(old, _predict_probe(old, tmp_path, cli=False))


@pytest.mark.slow  # a `tuneops` process: 10-15 s on two cores; the scoring path is the same for every kind
@pytest.mark.parametrize("version_id", IDS[:1])
def test_tuneops_predict_scores_with_an_old_version(old_format_versions, version_id, tmp_path):
    old = find(old_format_versions, version_id)
    _check_predictions(old, _predict_probe(old, tmp_path, cli=True))


def _check_predictions(old, frame: pd.DataFrame) -> None:
    column = old.record["probe"]["column"]
    assert list(frame.columns) == [column, *old.outputs, "model_version"]
    assert (frame["model_version"].astype(str) == old.version).all()
    assert_as_registered(old, frame)


def test_a_version_whose_pickle_names_missing_code_is_refused_with_the_fix(old_format_versions, tmp_path):
    """A pickled pyfunc naming a class this tuneops does not have (a newer or a foreign release) is a RegistryError
    that says what to do, not a traceback from inside unpickling."""
    from mlflow import MlflowClient

    from tuneops.errors import RegistryError
    from tuneops.serving.scoring import load_model

    old = find(old_format_versions, "v1/classifier")
    model = tmp_path / "model"
    shutil.copytree(old.folder / "model", model)
    pickled = model / "python_model.pkl"
    pickled.write_bytes(pickled.read_bytes().replace(b"TextClassifierModel", b"GoneClassifierModel"))
    client = MlflowClient()
    client.create_registered_model("old-format-missing-class")
    mv = client.create_model_version("old-format-missing-class", source=str(model))
    with pytest.raises(RegistryError, match="names code this tuneops .* does not have .*GoneClassifierModel.*"
                                            "register it again"):
        load_model("old-format-missing-class", mv.version)
