"""The monitoring story for a generator (model.task: causal_lm), end to end on the real Prefect server, the
SQLite MLflow store and a loopback Slack receiver, with the tiny causal LM so it runs in CI.

The champion answers "Which intent: <query>" with the intent in words (model.response_format: label).
score_batch writes its production log (prompt, response, token counts, finish reason, latency, version,
timestamp, request id). Control traffic from the same intents stays quiet. Then a family of intents it
never saw arrives: drift is flagged, the alert reaches Slack, the newly labelled prompt/response rows
trigger the training deployment on old + new data, and the triggered run trains and runs the gate.
`tuneops monitor` reads the same log from the command line. Whether the *real* SmolLM2 handles the new
intents after retraining is measured by `make demo-monitoring-llm` (docs/guides/monitoring.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import LABELS, ROOT, causal_config

NAME = "monitor-generator"
NEW = ["getting_virtual_card", "get_disposable_virtual_card", "disposable_card_limits"]
DEPLOYMENT = "monitor-generator-retrain"


def _instructions(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"prompt": "Which intent: " + frame.text, "response": frame.category.str.replace("_", " ")})


@pytest.fixture(scope="module")
def bank() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data/banking77/train.csv").sample(frac=1, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def generator(prefect_server, tiny_causal_lm, bank, tmp_path_factory):
    """A tiny causal-LM champion on the four phase-one intents, and a training deployment for retraining."""
    from tuneops.flows.train_model import train_model

    work = tmp_path_factory.mktemp("mon-llm")
    company = work / "instructions.csv"
    _instructions(bank[bank.category.isin(LABELS)].groupby("category").head(60)).to_csv(company, index=False)
    cfg = causal_config(str(company), tiny_causal_lm, NAME, model={"response_format": "label"},
                        gate={"max_regression": 1.0, "max_slice_drop": 1.0, "min_lift_over_baseline": None},
                        monitoring={"min_rows": 50, "reference_rows": 1000, "embedding_sample": 150,
                                    "alerts": {"channels": [{"kind": "slack", "url_env": "TUNEOPS_TEST_SLACK"}],
                                               "retries": 1, "retry_delay_seconds": 0.1},
                                    "retrain": {"enabled": True, "min_new_rows": 50, "cooldown_hours": 24,
                                                "deployment": f"train_model/{DEPLOYMENT}",
                                                "output": str(work / "retrain")}})
    outcome = train_model(config=cfg)
    assert outcome.registration.promoted, outcome.decision.reason
    deployment_id = train_model.to_deployment(name=DEPLOYMENT, concurrency_limit=1).apply()
    return cfg, outcome.registration.version, deployment_id


def _traffic(cfg, frame: pd.DataFrame, folder: Path) -> str:
    """Prompts scored by the champion through the score_batch flow: the production log monitoring reads."""
    from tuneops.flows.score_batch import score_batch

    folder.mkdir(parents=True)
    prompts = folder / "prompts.csv"
    frame[["prompt"]].to_csv(prompts, index=False)
    log = folder / "log"
    score_batch(config=cfg, input=str(prompts), output=str(log))
    return str(log)


@pytest.mark.slow
@pytest.mark.integration
def test_generator_log_control_drift_alert_retrain_gate(generator, bank, receiver, tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.flow_engine import run_flow_sync

    from tuneops.flows.monitor_production import monitor_production
    from tuneops.flows.train_model import train_model
    from tuneops.registry.tracking import client

    cfg, version, deployment_id = generator
    monkeypatch.setenv("TUNEOPS_TEST_SLACK", f"{receiver.url}/slack")
    held_out = _instructions(bank[bank.category.isin(LABELS)].groupby("category").nth(range(60, 110)))

    # The production log of a generator: every prompt with its answer and what it cost.
    control_log = _traffic(cfg, held_out, tmp_path / "control")
    [day] = Path(control_log).iterdir()
    logged = pd.read_json(next(day.iterdir()), lines=True)
    assert list(logged.columns) == ["prompt", "response", "prompt_tokens", "response_tokens", "finish_reason",
                                    "latency_ms", "model_version", "timestamp", "request_id"]
    assert len(logged) == len(held_out) and logged.request_id.is_unique and (logged.model_version == int(version)).all()
    assert (logged.prompt_tokens > 0).all() and logged.response_tokens.between(0, 6).all()
    assert set(logged.finish_reason) <= {"stop", "length"} and (logged.latency_ms > 0).all()

    control = monitor_production(config=cfg, predictions=control_log)
    signals = control.summary["signals"]
    assert {"text", "embedding", "response_tokens", "empty_response", "cut_off", "response_labels"} <= set(signals)
    assert "json_valid" not in signals  # answers are labels, not JSON lists
    assert not control.drift, {k: (s["score"], s["threshold"]) for k, s in signals.items()}
    assert receiver.received == [] and not control.retrain.retrain

    # A family of intents the champion never saw arrives; their labelled rows arrive too.
    new = bank[bank.category.isin(NEW)].groupby("category")
    window = pd.concat([held_out.head(40), _instructions(new.head(40))])
    labelled = tmp_path / "new" / "labelled.csv"
    labelled.parent.mkdir()
    _instructions(new.nth(range(40, 80))).to_csv(labelled, index=False)
    drift_cfg = cfg.model_copy(deep=True)
    drift_cfg.monitoring.retrain.new_data = str(labelled)
    outcome = monitor_production(config=drift_cfg, predictions=_traffic(cfg, window, tmp_path / "drift"))

    assert outcome.drift and outcome.summary["signals"]["text"]["drift"], outcome.summary["signals"]
    assert outcome.alerts_delivered == 1
    [(path, body)] = receiver.received
    assert path == "/slack" and f"{NAME} v{version}" in body["text"]
    run = client().get_run(outcome.run_id)
    assert run.data.metrics["drift_detected"] == 1.0 and "drift_response_labels" in run.data.metrics

    decision = outcome.retrain
    assert decision.retrain and decision.flow_run_id, decision.reasons
    combined = pd.read_csv(decision.data_uri)
    assert {"prompt", "response"} <= set(combined.columns)
    assert {c.replace("_", " ") for c in NEW + LABELS} <= set(combined.response)  # replay: old and new rows
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(decision.flow_run_id)
        assert flow_run.deployment_id == deployment_id
        run_flow_sync(train_model, flow_run=flow_run, parameters={"config": flow_run.parameters["config"]})
        state = prefect.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state.name}: {state.message}"
    [retrained] = [v for v in client().search_model_versions(f"name='{NAME}'") if v.version != int(version)]
    assert retrained.tags["tuneops.gate.reason"] and retrained.tags["tuneops.data.path"] == decision.data_uri
    assert f"v{version}" in retrained.tags["tuneops.gate.reason"]  # gated against the champion it replaces


@pytest.mark.slow
@pytest.mark.integration
def test_cli_monitor_reads_a_generator_log(generator, tmp_path):
    import yaml

    cfg, _, _ = generator
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    hotels = pd.read_json(ROOT / "data/nlupp/hotels.jsonl", lines=True).head(80)
    log = _traffic(cfg, pd.DataFrame({"prompt": "Which intent: " + hotels.text}), tmp_path / "hotels")
    done = subprocess.run([str(Path(sys.executable).parent / "tuneops"), "monitor", "--config", str(config),
                           "--input", log, "--report", str(tmp_path / "r.html")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["drift"] is True and summary["signals"]["text"]["drift"] is True
    assert Path(summary["report"]).is_file() and (tmp_path / "r-predictions.html").is_file()
