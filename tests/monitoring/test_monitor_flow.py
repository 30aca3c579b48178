"""The monitoring scenario end to end on the real Prefect server, SQLite MLflow store and loopback receivers.

Phase one: the champion is trained on four BANKING77 intents. Control: production traffic from the
same intents (held-out rows) stays quiet: no alert, no retraining. Drift: traffic full of virtual and
disposable card intents the champion never saw is flagged, the alert reaches a loopback Slack
webhook, newly labelled rows of those intents trigger the training deployment, whose run (executed
in this process by Prefect's flow engine, as a worker's engine would) trains on old + new data, passes the gate
against the champion and is promoted; the new champion recognises the new intents.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import LABELS, MINILM, ROOT, tiny_config

NAME = "monitor-champion"
NEW = ["getting_virtual_card", "get_disposable_virtual_card", "disposable_card_limits"]  # 97-121 rows each
DEPLOYMENT = "monitor-retrain"


@pytest.fixture(scope="module")
def bank() -> pd.DataFrame:
    """BANKING77 shuffled with a fixed seed (the file's own order is not random: early rows are shorter)."""
    return pd.read_csv(ROOT / "data/banking77/train.csv").sample(frac=1, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def scenario(prefect_server, bank, tmp_path_factory):
    """A champion on the four phase-one intents and a training deployment with a concurrency limit of 1."""
    from tuneops.flows.train_model import train_model

    work = tmp_path_factory.mktemp("mon")
    company = work / "company.csv"
    bank[bank.category.isin(LABELS)].groupby("category").head(60).to_csv(company, index=False)
    cfg = _config(str(company), work)
    outcome = train_model(config=cfg)
    assert outcome.registration.promoted, outcome.decision.reason
    deployment_id = train_model.to_deployment(name=DEPLOYMENT, concurrency_limit=1).apply()
    return cfg, outcome.registration.version, deployment_id


def _config(data: str, work: Path, **monitoring):
    # LoRA on the real MiniLM, as in production: a randomly initialised tiny BERT learns the new intents or
    # not depending on its draw (seed 0 named none of them), so "the new champion handles them" would test luck.
    cfg = tiny_config(data, MINILM, NAME, model={"base": MINILM, "max_length": 32},
                      training={"method": "lora", "epochs": 4, "learning_rate": 0.002, "batch_size": 32},
                      gate={"max_regression": 0.5, "max_slice_drop": 0.6, "floors": {"accuracy": 0.0}})
    raw = cfg.model_dump(mode="json")
    raw["monitoring"] = {"min_rows": 100, "reference_rows": 1000, "embedding_sample": 200,
                         "report_path": str(work / "reports"),
                         "alerts": {"channels": [{"kind": "slack", "url_env": "TUNEOPS_TEST_SLACK"},
                                                 {"kind": "webhook", "url_env": "TUNEOPS_TEST_DEAD"}],
                                    "retries": 1, "retry_delay_seconds": 0.1},
                         "retrain": {"enabled": True, "min_new_rows": 100, "cooldown_hours": 24,
                                     "deployment": f"train_model/{DEPLOYMENT}", "output": str(work / "retrain")},
                         **monitoring}
    from tuneops.config import validate_config

    return validate_config(raw)


def _log(cfg, version: str, texts: pd.Series, folder: Path) -> str:
    from tuneops.serving.scoring import append_prediction_log, score_texts

    scored = score_texts(cfg.registry.model_name, version, pd.DataFrame({"text": texts}), "text")
    append_prediction_log(scored, str(folder), "jsonl", now=datetime.now(UTC))
    return str(folder)


def _runs_of(deployment_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


@pytest.mark.slow
@pytest.mark.integration
def test_control_then_drift_alert_retrain_promote(scenario, bank, receiver, dead_url, tmp_path, monkeypatch):
    from tuneops.flows.monitor_production import monitor_production
    from tuneops.registry import versions as registry
    from tuneops.serving.scoring import score_texts

    cfg, version, deployment_id = scenario
    monkeypatch.setenv("TUNEOPS_TEST_SLACK", f"{receiver.url}/slack")
    monkeypatch.setenv("TUNEOPS_TEST_DEAD", dead_url)
    held_out = bank[bank.category.isin(LABELS)].groupby("category").nth(range(60, 110))

    # Control: traffic from the training distribution.
    control = monitor_production(config=cfg, predictions=_log(cfg, version, held_out.text, tmp_path / "control"))
    assert not control.drift, {k: (s["score"], s["threshold"]) for k, s in control.summary["signals"].items()}
    assert receiver.received == [] and control.alerts_delivered == 0
    assert not control.retrain.retrain and "no significant drift" in control.retrain.reasons[0]

    # Drift: the new intents arrive in production.
    new_traffic = bank[bank.category.isin(NEW)].groupby("category").head(30)
    window = pd.concat([held_out.text.head(100), new_traffic.text])
    labelled = bank[bank.category.isin(NEW)].groupby("category").nth(range(30, 80))
    new_data = tmp_path / "new" / "labelled.csv"
    new_data.parent.mkdir()
    labelled[["text", "category"]].to_csv(new_data, index=False)
    drift_cfg = cfg.model_copy(deep=True)
    drift_cfg.monitoring.retrain.new_data = str(new_data)
    outcome = monitor_production(config=drift_cfg, predictions=_log(cfg, version, window, tmp_path / "drift"))

    assert outcome.drift and outcome.summary["signals"]["text"]["drift"], outcome.summary["signals"]
    # The alert reached Slack with the numbers, window, version and links; the dead webhook did not fail the run.
    assert outcome.alerts_delivered == 1 and outcome.alerts_failed == 1
    [(path, body)] = receiver.received
    assert path == "/slack" and f"{NAME} v{version}" in body["text"] and "Window:" in body["text"]
    assert f"{outcome.summary['signals']['text']['score']:.4f}" in body["text"] and outcome.report in body["text"]
    assert Path(outcome.report).is_file() and outcome.report.startswith(str(tmp_path.parent))
    _check_recorded(outcome.run_id, tmp_path)

    # Retraining was triggered on old + new data; run it as a worker would.
    decision = outcome.retrain
    assert decision.retrain and decision.flow_run_id, decision.reasons
    uri = decision.data_uri
    combined = pd.read_csv(uri)
    assert set(NEW) <= set(combined.category) and set(LABELS) <= set(combined.category)  # replay
    from prefect import get_client
    from prefect.flow_engine import run_flow_sync

    from tuneops.flows.train_model import train_model

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(decision.flow_run_id)
        assert flow_run.deployment_id == deployment_id and flow_run.parameters["config"]["data"]["path"] == uri
        # Execute the scheduled run in this process, as a worker's engine would (same flow run id).
        run_flow_sync(train_model, flow_run=flow_run, parameters={"config": flow_run.parameters["config"]})
        state = client.read_flow_run(decision.flow_run_id).state
    assert state.is_completed(), f"{state.name}: {state.message}"
    champion = registry.alias_version(NAME, "champion")
    assert champion != version, "the retrained model was not promoted"
    unseen = bank[bank.category.isin(NEW)].groupby("category").nth(range(80, 200))
    predicted = score_texts(NAME, champion, unseen[["text"]], "text")
    # The old champion could not name any of them (0 by construction); the new one puts most texts in the new
    # family and names the exact intent far above chance (1/7).
    family = predicted.label.isin(NEW).mean()
    exact = (predicted.label.to_numpy() == unseen.category.to_numpy()).mean()
    print(f"new champion on unseen new-intent texts: family {family:.2f}, exact {exact:.2f}")
    assert family > 0.7 and exact > 0.5, (family, exact)

    # A second trigger inside the cooldown is declined, and says why.
    again = monitor_production(config=drift_cfg, predictions=str(tmp_path / "drift"))
    assert again.drift and not again.retrain.retrain
    assert any("cooldown" in r for r in again.retrain.reasons)


def _check_recorded(run_id: str, tmp_path: Path) -> None:
    from tuneops.registry.tracking import client

    run = client().get_run(run_id)
    assert run.data.metrics["drift_detected"] == 1.0 and "drift_text" in run.data.metrics
    history = client().get_metric_history(run_id, "drift_text")
    assert len(history) == 1
    names = {a.path for a in client().list_artifacts(run_id, "drift")}
    assert "drift/drift_report.html" in names
    deliveries = json.loads(Path(client().download_artifacts(run_id, "alerts/deliveries.json", str(tmp_path)))
                            .read_text())
    assert [(d["delivered"], d["attempts"]) for d in deliveries] == [(True, 1), (False, 2)]
    assert run.data.tags["tuneops.retrain.triggered"] == "True"


@pytest.mark.slow
@pytest.mark.integration
def test_two_simultaneous_triggers_start_one_training(scenario, bank, tmp_path):
    from tuneops.monitoring import check
    from tuneops.tasks.production import trigger_retraining

    cfg, version, deployment_id = scenario
    _, _, _, train_cfg = check.champion_lineage(NAME)
    new = bank[bank.category == "getting_virtual_card"].head(50).rename(columns={})
    before = {r.id for r in _runs_of(deployment_id)}
    barrier, results, errors = threading.Barrier(2), [], []

    def fire() -> None:
        barrier.wait()
        try:
            results.append(trigger_retraining(cfg, train_cfg, new, version))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    created = [r for r in _runs_of(deployment_id) if r.id not in before]
    assert len(created) == 1 and results[0][0] == results[1][0] == str(created[0].id)
    from prefect import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment(deployment_id)
    # Prefect 3.9 reports the limit through the deployment's global concurrency limit object.
    limit = dep.global_concurrency_limit.limit if dep.global_concurrency_limit else dep.concurrency_limit
    assert limit == 1


@pytest.mark.slow
@pytest.mark.integration
def test_failed_monitoring_run_alerts(scenario, receiver, tmp_path, monkeypatch):
    from tuneops.flows.monitor_production import monitor_production

    cfg = scenario[0].model_copy(deep=True)
    cfg.monitoring.alerts.channels = cfg.monitoring.alerts.channels[:1]
    monkeypatch.setenv("TUNEOPS_TEST_SLACK", f"{receiver.url}/slack")
    with pytest.raises(Exception, match="does not exist"):
        monitor_production(config=cfg, predictions=str(tmp_path / "nowhere"))
    [(path, body)] = receiver.received
    assert "monitoring run failed" in body["text"] and "does not exist" in body["text"]


@pytest.mark.slow
@pytest.mark.integration
def test_cli_monitor_prints_one_json_line(scenario, bank, tmp_path):
    import yaml

    cfg, version, _ = scenario
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    hotels = pd.read_json(ROOT / "data/nlupp/hotels.jsonl", lines=True).text.head(150)
    log = _log(cfg, version, hotels, tmp_path / "log")
    cli = [str(Path(sys.executable).parent / "tuneops"), "monitor", "--config", str(config)]
    done = subprocess.run([*cli, "--input", log, "--report", str(tmp_path / "r.html")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["drift"] is True and summary["signals"]["text"]["drift"] is True
    assert summary["report"] == str(tmp_path / "r.html") and Path(summary["report"]).is_file()
    bad = subprocess.run([*cli, "--input", str(tmp_path / "missing")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr
