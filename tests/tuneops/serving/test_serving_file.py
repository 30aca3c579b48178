"""What one `tuneops serve` process serves when it serves several models: the serving file (validated, every problem
at once), several --config, the process's host/port/workers (a flag wins, then the file, then the configs, which
must agree), each model's own serving section, and the refusals (one name twice, one prediction log twice, options
of one model with several). Nothing is loaded or served here: these tests train nothing and start no server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli
from tuneops.errors import ConfigError, TuneopsError
from tuneops.serving import serving_file
from tuneops.serving.spec import build_spec, build_specs, specs_from_json, specs_to_json


def _config(folder: Path, file: str, name: str, **serving) -> str:
    path = folder / file
    raw = {"data": {"path": "company.csv", "label_column": "category"}, "registry": {"model_name": name}}
    if serving:
        raw["serving"] = serving
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _file(folder: Path, content: dict | str) -> str:
    path = folder / "serving.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return str(path)


def test_a_serving_file_serves_each_model_with_its_own_serving_section(tmp_path):
    """Config paths are relative to the file; each model keeps its config's serving settings (batching, runtime, log)
    with the entry's version, alias or runtime applied; the file's port is the process's; several models load with
    share_base."""
    (tmp_path / "configs").mkdir()
    _config(tmp_path / "configs", "a.yaml", "intent-a", max_batch_size=8, poll_interval_s=2)
    _config(tmp_path / "configs", "b.yaml", "intent-b", max_batch_size=16, log_predictions=False)
    _config(tmp_path / "configs", "c.yaml", "intent-c")
    path = _file(tmp_path, {"port": 9001, "models": [
        {"config": "configs/a.yaml"}, {"config": "configs/b.yaml", "version": 3},
        {"config": str(tmp_path / "configs/c.yaml"), "alias": "challenger", "runtime": "auto"}]})
    requests, values, label = serving_file.requests_from(None, path, [], None, None)
    a, b, c = build_specs(requests, {}, values, label)
    assert [s.model_name for s in (a, b, c)] == ["intent-a", "intent-b", "intent-c"]
    assert [s.route for s in (a, b, c)] == [f"/models/intent-{x}/invocations" for x in "abc"]
    assert (a.alias, a.version, b.alias, b.version, c.alias, c.version) == ("champion", None, None, "3",
                                                                            "challenger", None)
    assert [s.serving["max_batch_size"] for s in (a, b, c)] == [8, 16, 32]
    assert (a.serving["poll_interval_s"], c.serving["runtime"], a.serving["runtime"]) == (2, "auto", "fp32")
    assert {s.serving["port"] for s in (a, b, c)} == {9001}
    assert b.log_output is None and a.log_output.endswith("intent-a") and c.log_output.endswith("intent-c")
    assert all(s.share_base for s in (a, b, c))
    # what uvicorn's worker processes get (--workers N): every model, as built here; one spec alone reads too
    assert specs_from_json(specs_to_json([a, b, c])) == [a, b, c] and specs_from_json(a.to_json()) == [a]
    # --port wins over the file, and every --set reaches every config
    requests, values, label = serving_file.requests_from(None, path, ["serving.max_wait_ms=7"], None, None)
    specs = build_specs(requests, {"port": 9100}, values, label)
    assert {s.serving["port"] for s in specs} == {9100} and {s.serving["max_wait_ms"] for s in specs} == {7}


def test_one_config_is_served_as_before(tmp_path):
    """`tuneops serve --config A` builds the spec it always built: no share_base, the config's serving section with
    the flags applied."""
    from tuneops.config import ServingConfig, load_config

    config = _config(tmp_path, "a.yaml", "intent-a", port=9000, max_batch_size=8)
    requests, values, label = serving_file.requests_from([config], None, [], None, None)
    (spec,) = build_specs(requests, {"port": 9002, "workers": None}, values, label)
    cfg = load_config(config)
    before = build_spec(cfg, ServingConfig.model_validate({**cfg.serving.model_dump(), "port": 9002}))
    assert spec == before and not spec.share_base and spec.serving["port"] == 9002


def test_every_problem_of_a_serving_file_is_named_at_once(tmp_path):
    good = _config(tmp_path, "good.yaml", "intent-a")
    path = _file(tmp_path, {"prot": 8080, "workers": 0, "models": [
        {"version": 2}, {"config": good, "version": "three"}, {"config": good, "version": 2, "alias": "champion"},
        {"config": good, "name": "other"}, {"config": good, "runtime": "onxx"}]})
    with pytest.raises(ConfigError) as caught:
        serving_file.requests_from(None, path, [], None, None)
    message = str(caught.value)
    assert "has 7 problems" in message, message
    for expected in ("prot: unknown field (known: host, port, workers, models)",
                     "workers: Input should be greater than or equal to 1 (got 0)",
                     "models[0].config: required field is missing",
                     "models[1].version: a version is a registered version number such as 3, not 'three'",
                     "models[2]: version 2 pins the model and alias champion follows one; give one of them",
                     "models[3].name: unknown field (known: config, version, alias, runtime)",
                     "models[4].runtime: unknown runtime 'onxx'; known: "):
        assert expected in message, message
    with pytest.raises(ConfigError, match="must hold a mapping with a 'models' list"):
        serving_file.requests_from(None, _file(tmp_path, "- config: a.yaml\n"), [], None, None)
    with pytest.raises(ConfigError, match=r"models: List should have at least 1 item"):
        serving_file.requests_from(None, _file(tmp_path, {"models": []}), [], None, None)
    with pytest.raises(ConfigError, match="does not exist"):
        serving_file.requests_from(None, str(tmp_path / "nowhere.yaml"), [], None, None)


def test_the_configs_of_a_serving_file_are_checked_together(tmp_path):
    """A missing config and a config with a typo: both reported, each under its entry, in one message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"path": "x.csv"}, "registry": {"model_name": "b"},
                                   "serving": {"max_batch_sise": 4}}))
    path = _file(tmp_path, {"models": [{"config": "missing.yaml"}, {"config": "bad.yaml"}]})
    with pytest.raises(ConfigError) as caught:
        serving_file.requests_from(None, path, [], None, None)
    message = str(caught.value)
    assert "has 2 problems" in message
    assert "models[0].config missing.yaml: config file" in message and "does not exist" in message
    assert "models[1].config bad.yaml:" in message and "serving.max_batch_sise" in message


def test_host_port_and_workers_are_the_process_s_and_a_conflict_is_refused_by_name(tmp_path):
    a = _config(tmp_path, "a.yaml", "intent-a", port=9000, workers=2)
    b = _config(tmp_path, "b.yaml", "intent-b", port=9001, host="0.0.0.0")
    requests, values, label = serving_file.requests_from([a, b], None, [], None, None)
    with pytest.raises(ConfigError) as caught:
        build_specs(requests, {}, values, label)
    message = str(caught.value)
    assert f"serving.port differs between the models' configs ({a} sets 9000, {b} sets 9001)" in message
    assert "give it once with --port" in message and message.count("differs") == 1  # the others agree
    specs = build_specs(requests, {"port": 9500}, values, label)  # the flag settles it; what one config sets holds
    assert [(s.serving["port"], s.serving["workers"], s.serving["host"]) for s in specs] == \
        [(9500, 2, "0.0.0.0")] * 2
    path = _file(tmp_path, {"port": 9600, "models": [{"config": a}, {"config": b}]})
    requests, values, label = serving_file.requests_from(None, path, [], None, None)
    assert {s.serving["port"] for s in build_specs(requests, {}, values, label)} == {9600}
    with pytest.raises(ConfigError, match=r"--workers 0: Input should be greater than or equal to 1"):
        build_specs(requests, {"workers": 0}, values, label)


def test_one_name_or_one_prediction_log_twice_is_refused(tmp_path):
    a = _config(tmp_path, "a.yaml", "intent-a")
    again = _config(tmp_path, "again.yaml", "intent-a")
    requests, *_ = serving_file.requests_from([a, again], None, [], None, None)
    with pytest.raises(ConfigError, match=rf"{re.escape(a)} and {re.escape(again)} both serve the model intent-a"):
        build_specs(requests)
    b = tmp_path / "b.yaml"
    c = tmp_path / "c.yaml"
    for path, name in ((b, "intent-b"), (c, "intent-c")):
        path.write_text(yaml.safe_dump({"data": {"path": "x.csv"}, "registry": {"model_name": name},
                                        "monitoring": {"predictions": str(tmp_path / "log")}}))
    requests, *_ = serving_file.requests_from([str(b), str(c)], None, [], None, None)
    with pytest.raises(ConfigError, match="both write their prediction log to .*own monitoring.predictions"):
        build_specs(requests)


def test_options_of_one_model_are_refused_with_several(tmp_path):
    a = _config(tmp_path, "a.yaml", "intent-a")
    b = _config(tmp_path, "b.yaml", "intent-b")
    with pytest.raises(ConfigError, match="--version name one model, and 2 configs are given"):
        serving_file.requests_from([a, b], None, [], None, "3")
    with pytest.raises(ConfigError, match="--serving-file lists the models itself; drop --config"):
        serving_file.requests_from([a], _file(tmp_path, {"models": [{"config": b}]}), [], None, None)
    with pytest.raises(TuneopsError, match="needs --config CONFIG"):
        serving_file.requests_from(None, None, [], None, None)
    requests, *_ = serving_file.requests_from([a], None, [], "models:/other@champion", None)
    requests += serving_file.requests_from([b], None, [], None, None)[0]
    assert [s.model_name for s in build_specs(requests)] == ["other", "intent-b"]


def test_the_cli_refuses_a_conflict_with_exit_2_and_no_traceback(tmp_path):
    a = _config(tmp_path, "a.yaml", "intent-a", port=9000)
    b = _config(tmp_path, "b.yaml", "intent-b", port=9001)
    done = run_cli("serve", "--config", a, "--config", b)
    assert done.returncode == 2, done.stderr
    assert "serving.port differs between the models' configs" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("serve", "--config", a, "--config", b, "--port", "9002", "--mlflow-command")
    assert done.returncode == 1 and "--mlflow-command prints the `mlflow models serve` line of one model" in \
        done.stderr, done.stderr


def test_the_documented_serving_files_are_valid():
    """Every YAML block of the serving-file reference parses as a serving file."""
    page = ROOT / "docs/reference/serving-file.md"
    blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        served = serving_file.parse(yaml.safe_load(block), page)
        assert served.models
