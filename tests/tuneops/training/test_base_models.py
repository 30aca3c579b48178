"""model.base resolution: every accepted kind resolves, and one that resolves to none of them (or does not fit
model.task) fails before any flow run with one message that names the key and what it accepts."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.conftest import MINILM, run_cli
from tuneops.errors import ConfigError
from tuneops.training.base_models import ACCEPTED, preflight


def test_packaged_and_local_models_resolve(tiny_model, tiny_causal_lm):
    from pathlib import Path

    assert (Path(preflight(MINILM, "classification")) / "config.json").is_file()
    assert preflight(tiny_model, "classification") == tiny_model
    assert preflight(tiny_causal_lm, "causal_lm") == tiny_causal_lm


@pytest.mark.parametrize(("base", "task", "message"), [
    ("nobody/no-such-model", "classification", "neither a packaged model, nor a local folder, nor a hub id"),
    ("package:no-such-package", "classification", "is no packaged model"),
    (MINILM, "causal_lm", "architecture BertModel is not a causal language model"),
])
def test_unusable_bases_are_named_with_what_is_accepted(base, task, message):
    with pytest.raises(ConfigError, match=message) as failure:
        preflight(base, task)
    assert f"model.base '{base}'" in str(failure.value)
    if "packaged" in message or "neither" in message:
        assert ACCEPTED in str(failure.value)


def test_a_folder_that_is_no_saved_model_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="a folder without config.json"):
        preflight(str(tmp_path), "classification")


def test_train_with_an_unavailable_base_exits_2_fast_with_one_message(tmp_path, company_csv):
    config = tmp_path / "bad-base.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": company_csv, "label_column": "category"},
                                      "model": {"base": "acme/support-bert-7b"},
                                      "registry": {"model_name": "never", "experiment": "tests"}}))
    start = time.monotonic()
    proc = run_cli("train", str(config))
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert "model.base 'acme/support-bert-7b'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, no flow run, no log
    assert seconds < 10, seconds


def test_a_deployment_run_with_an_unavailable_base_fails_before_any_mlflow_run(prefect_server, company_csv,
                                                                              tiny_model):
    """Runs started from the Prefect UI skip the CLI: the flow's first task checks model.base."""
    from mlflow import MlflowClient

    from tests.conftest import tiny_config
    from tuneops.flows.train_model import train_model

    cfg = tiny_config(company_csv, tiny_model, "never-trained", model={"base": "acme/support-bert-7b"})
    with pytest.raises(ConfigError, match="model.base 'acme/support-bert-7b'"):
        train_model(config=cfg)
    experiment = MlflowClient().get_experiment_by_name("tests")
    runs = MlflowClient().search_runs([experiment.experiment_id], "attributes.run_name = 'never-trained'") \
        if experiment else []
    assert not runs
