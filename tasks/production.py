"""Prefect tasks of the monitor_production flow; the drift, alert and retrain logic lives in tuneops.monitoring."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops import settings
from tuneops.config import TuneopsConfig
from tuneops.monitoring import check, retrain
from tuneops.monitoring.alerts import Alert, Delivery, deliver
from tuneops.monitoring.drift import DriftResult
from tuneops.registry import tracking


def prefect_run_url() -> str:
    """Link to the current Prefect flow run in the UI (empty outside a run)."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_UI_URL

    ctx = FlowRunContext.get()
    base = PREFECT_UI_URL.value()
    if ctx is None or ctx.flow_run is None or not base:
        return ""
    return f"{base.rstrip('/')}/runs/flow-run/{ctx.flow_run.id}"


@task(name="resolve-reference", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def resolve_reference(cfg: TuneopsConfig) -> check.Reference:
    """The champion's training data via registry lineage, scored by the champion."""
    return check.resolve_reference(cfg)


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(cfg: TuneopsConfig, predictions: str, window: check.Window, reference: check.Reference,
                report_file: str) -> DriftResult:
    """Compare the window's predictions with the reference on every signal; write the HTML report."""
    result, _ = check.run_check(cfg, predictions, window, report_file, reference)
    return result


@task(name="record-drift", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def record_drift(cfg: TuneopsConfig, result: DriftResult, reference: check.Reference, window: check.Window,
                 run_id: str) -> str:
    """Scores as MLflow metrics (a time series per signal), the report as an artifact, Prefect artifacts.

    Returns where the report is stored (the configured path or S3 copy, else the MLflow artifact).
    """
    from tuneops.data.storage import write_bytes

    metrics = {f"drift_{k}": s.score for k, s in result.signals.items()}
    metrics |= {"drift_detected": float(result.drift), "drifting_signals": float(len(result.drifting)),
                "current_rows": float(result.current_rows), "reference_rows": float(result.reference_rows)}
    metrics |= {f"seconds_{k}": v for k, v in result.seconds.items()}
    tracking.log_metrics(run_id, metrics)
    tracking.set_tags(run_id, {"tuneops.model": reference.model_name, "tuneops.model_version": reference.version,
                               "tuneops.window": window.describe(), "tuneops.drift": str(result.drift),
                               "tuneops.reference.data_path": reference.data_path})
    tracking.log_text(run_id, json.dumps(result.summary(), indent=2), "drift/summary.json")
    tracking.log_artifacts(run_id, str(Path(result.report).parent), "drift")
    stored = f"runs:/{run_id}/drift/{Path(result.report).name}"
    if cfg.monitoring.report_path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        stored = f"{cfg.monitoring.report_path.rstrip('/')}/drift-{reference.model_name}-{stamp}.html"
        write_bytes(Path(result.report).read_bytes(), stored)
    lines = [f"# Drift check: {'DRIFT' if result.drift else 'no drift'}", "",
             f"{reference.model_name} v{reference.version}; window {window.describe()}; "
             f"{result.current_rows} production rows vs {result.reference_rows} reference rows.", "",
             "| signal | score | threshold | drift |", "|---|---|---|---|"]
    lines += [f"| {k} | {s.score:.4f} | {s.threshold:g} | {'**yes**' if s.drift else 'no'} |"
              for k, s in result.signals.items()]
    lines += ["", f"Report: `{stored}`; MLflow run `{run_id}`."]
    create_markdown_artifact("\n".join(lines), key="drift-check", description="Drift signals of the window")
    if stored.startswith(("http://", "https://", "s3://", "file:", "/")):
        create_link_artifact(stored if "://" in stored else Path(stored).as_uri(), link_text="drift report",
                             key="drift-report")
    return stored


def alert_text(result: DriftResult, reference: check.Reference, window: check.Window, report: str,
               run_url: str) -> Alert:
    """The drift alert: drifting signals with numbers, window, model version, links."""
    drifting = "\n".join(f"- {k}: {s.score:.4f} (threshold {s.threshold:g})" for k, s in result.drifting.items())
    text = (f"Drift in production traffic of {reference.model_name} v{reference.version}.\n"
            f"Window: {window.describe()} ({result.current_rows} predictions).\n"
            f"Drifting signals:\n{drifting}\nReport: {report}\nPrefect run: {run_url or 'n/a'}")
    return Alert(f"[tuneops] drift: {reference.model_name} v{reference.version}", text,
                 {"event": "drift", "model": reference.model_name, "version": reference.version,
                  "window": window.describe(), "report": report, "prefect_run": run_url, **result.summary()})


@task(name="send-alerts", cache_policy=NO_CACHE)
def send_alerts(cfg: TuneopsConfig, alert: Alert, run_id: str | None) -> list[Delivery]:
    """Deliver to every channel with retries; record every outcome. A failed delivery does not fail the run."""
    records = deliver(alert, cfg.monitoring.alerts)
    logger = get_run_logger()
    for r in records:
        (logger.info if r.delivered else logger.error)("alert to %s: %s after %d attempt(s)%s", r.channel,
                                                        "delivered" if r.delivered else "NOT delivered", r.attempts,
                                                        f" ({r.error})" if r.error else "")
    if run_id:
        tracking.log_text(run_id, json.dumps([asdict(r) for r in records], indent=2), "alerts/deliveries.json")
        tracking.log_metrics(run_id, {"alerts_delivered": float(sum(r.delivered for r in records)),
                                      "alerts_failed": float(sum(not r.delivered for r in records))})
    rows = "\n".join(f"| {r.channel} | {r.delivered} | {r.attempts} | {r.error or ''} |" for r in records)
    create_markdown_artifact(f"# Alert deliveries\n\n| channel | delivered | attempts | error |\n|---|---|---|---|\n"
                             f"{rows}", key="alert-deliveries", description="Where the alert went")
    return records


def trigger_retraining(cfg: TuneopsConfig, train_cfg: TuneopsConfig, new: Any, champion_version: str
                       ) -> tuple[str, str, str]:
    """Start the training deployment on previous + new data; returns (flow run id, data URI, idempotency key).

    The run is created with ``timeout=0`` (do not wait) and the request's idempotency key, so two
    simultaneous triggers for the same situation create one flow run.
    """
    from prefect.deployments import run_deployment

    params, uri, key = retrain.retrain_request(cfg, train_cfg, new, champion_version)
    run = run_deployment(cfg.monitoring.retrain.deployment, parameters={"config": params}, timeout=0,
                         idempotency_key=key, as_subflow=False, tags=["tuneops-retrain"])
    return str(run.id), uri, key


@task(name="decide-retraining", cache_policy=NO_CACHE)
def decide_retraining(cfg: TuneopsConfig, result: DriftResult, reference: check.Reference,
                      run_id: str) -> retrain.RetrainDecision:
    """Check the three conditions; trigger the training deployment when all hold; record the decision."""
    new_rows, new = retrain.count_new_rows(cfg)
    last = retrain.last_retrain(reference.model_name, cfg.monitoring.experiment)
    decision = retrain.decide(result, cfg.monitoring.retrain, new_rows, last, datetime.now(UTC))
    if decision.retrain and new is not None:
        flow_run_id, uri, key = trigger_retraining(cfg, reference.config, new, reference.version)
        decision.flow_run_id, decision.data_uri, decision.idempotency_key = flow_run_id, uri, key
        decision.reasons.append(f"started {cfg.monitoring.retrain.deployment} (flow run {flow_run_id}) on {uri}")
    tracking.set_tags(run_id, {retrain.TRIGGER_TAG: str(decision.retrain),
                               "tuneops.retrain.reason": "; ".join(decision.reasons)[:5000]})
    tracking.log_text(run_id, json.dumps(asdict(decision), indent=2, default=str), "retrain/decision.json")
    create_markdown_artifact(f"# Retraining: {'triggered' if decision.retrain else 'not triggered'}\n\n"
                             + "\n".join(f"- {r}" for r in decision.reasons), key="retrain-decision",
                             description="Why (not) retrained")
    get_run_logger().info("retraining %s: %s", "triggered" if decision.retrain else "not triggered",
                          "; ".join(decision.reasons))
    return decision


def report_dir(run_id: str) -> Path:
    path = settings.home() / "monitoring" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def failure_alert(cfg: TuneopsConfig, flow_run: Any, state: Any) -> list[Delivery]:
    """Tell the channels that the monitoring run itself failed (a Prefect on_failure hook calls this)."""
    from prefect.settings import PREFECT_UI_URL

    url = f"{(PREFECT_UI_URL.value() or '').rstrip('/')}/runs/flow-run/{flow_run.id}"
    alert = Alert(f"[tuneops] monitoring run failed: {cfg.registry.model_name}",
                  f"The monitor_production run {flow_run.name} failed: {state.message}\nPrefect run: {url}",
                  {"event": "monitoring_failed", "model": cfg.registry.model_name, "prefect_run": url,
                   "error": str(state.message)})
    return deliver(alert, cfg.monitoring.alerts)
