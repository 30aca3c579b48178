"""monitor_production: drift of production traffic against the champion's training data; alert; retrain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect import flow

from tuneops.config import TuneopsConfig
from tuneops.errors import ConfigError
from tuneops.monitoring.check import Window
from tuneops.monitoring.retrain import RetrainDecision
from tuneops.registry import tracking
from tuneops.tasks.production import (
    alert_text,
    check_drift,
    decide_retraining,
    failure_alert,
    prefect_run_url,
    record_drift,
    report_dir,
    resolve_reference,
    send_alerts,
)


@dataclass
class MonitorOutcome:
    """What one monitoring run found and did."""

    drift: bool
    summary: dict[str, Any]
    report: str
    model_version: str
    alerts_delivered: int
    alerts_failed: int
    retrain: RetrainDecision
    run_id: str


def _on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    config = flow_run.parameters.get("config")
    if config is None:
        return
    failure_alert(TuneopsConfig.model_validate(config), flow_run, state)


@flow(name="monitor_production", log_prints=True, on_failure=[_on_failure])
def monitor_production(config: TuneopsConfig, predictions: str | None = None, window_hours: float | None = None,
                       window_end: datetime | None = None) -> MonitorOutcome:
    """Check the last ``window_hours`` of production predictions for drift, alert, and maybe retrain.

    1. resolve the champion of ``config.registry.model_name`` and its training data through registry
       lineage (version tags and the training run's resolved config), scored by the champion;
    2. read the window of the prediction log (``predictions`` or ``monitoring.predictions``);
    3. compare every signal with Evidently (text, descriptors, predicted labels, confidence, embeddings);
    4. log the scores as MLflow metrics in ``monitoring.experiment``, store the HTML report (MLflow,
       plus ``monitoring.report_path``), publish Prefect markdown and link artifacts;
    5. on drift, alert every configured channel (retried, recorded, never failing the run);
    6. decide on retraining (drift AND new labelled data AND cooldown) and start the training
       deployment when all hold; record the decision either way.
    A failed run alerts the same channels (on_failure hook).
    """
    mon = config.monitoring
    source = predictions or mon.predictions
    if not source:
        raise ConfigError("no prediction log to monitor: pass predictions= or set monitoring.predictions")
    window = Window.last_hours(window_hours or mon.window_hours, window_end)
    with tracking.run(mon.experiment, run_name=f"monitor-{config.registry.model_name}") as run_id:
        reference = resolve_reference(config)
        result = check_drift(config, source, window, reference, str(report_dir(run_id) / "drift_report.html"))
        stored = record_drift(config, result, reference, window, run_id)
        deliveries = []
        if result.drift:
            deliveries = send_alerts(config, alert_text(result, reference, window, stored, prefect_run_url()),
                                     run_id)
        decision = decide_retraining(config, result, reference, run_id)
    return MonitorOutcome(result.drift, result.summary(), stored, reference.version,
                          sum(d.delivered for d in deliveries), sum(not d.delivered for d in deliveries),
                          decision, run_id)
