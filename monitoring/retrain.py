"""The retraining trigger: a pure decision, a replay training set, and one idempotent deployment run.

Retrain only when drift is significant AND enough new labelled data has arrived AND the cooldown
since the last triggered retraining has passed. The training set is the champion's training data
plus the new rows (replay against forgetting); train_model then gates the new model against the
champion as always. The deployment run is created with ``timeout=0`` (do not wait) and an
idempotency key derived from the champion version and the new data's fingerprint, so two triggers
for the same situation create one flow run; the deployment's concurrency limit of 1 keeps
triggers for different data from training at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from tuneops import settings
from tuneops.config import RetrainConfig, TuneopsConfig
from tuneops.data.storage import read_dataset, write_bytes
from tuneops.errors import DataError
from tuneops.monitoring.drift import DriftResult

TRIGGER_TAG = "tuneops.retrain.triggered"


@dataclass
class RetrainDecision:
    """Whether to retrain, and every reason for or against (all are recorded)."""

    retrain: bool
    reasons: list[str]
    new_rows: int = 0
    last_retrain: str | None = None
    flow_run_id: str | None = None
    data_uri: str | None = None
    idempotency_key: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def decide(result: DriftResult, cfg: RetrainConfig, new_rows: int, last_retrain: datetime | None,
           now: datetime) -> RetrainDecision:
    """The three conditions, each reported whether it holds or not."""
    reasons, ok = [], True
    if not cfg.enabled:
        return RetrainDecision(False, ["retraining is disabled (monitoring.retrain.enabled: false)"], new_rows)
    drifting = len(result.drifting)
    if drifting >= cfg.min_drifting_signals:
        reasons.append(f"significant drift: {drifting} signal(s) drifting ({', '.join(result.drifting)}), "
                       f"need {cfg.min_drifting_signals}")
    else:
        ok = False
        reasons.append(f"no significant drift: {drifting} signal(s) drifting, need {cfg.min_drifting_signals}")
    if new_rows >= cfg.min_new_rows:
        reasons.append(f"{new_rows} new labelled rows (need {cfg.min_new_rows})")
    else:
        ok = False
        reasons.append(f"only {new_rows} new labelled rows, need {cfg.min_new_rows}")
    if last_retrain is not None and now - last_retrain < timedelta(hours=cfg.cooldown_hours):
        ok = False
        reasons.append(f"cooldown: last retraining was triggered at {last_retrain.isoformat(timespec='seconds')}, "
                       f"less than {cfg.cooldown_hours:g} h ago")
    else:
        reasons.append("cooldown passed" if last_retrain else "no earlier retraining")
    return RetrainDecision(ok, reasons, new_rows, last_retrain.isoformat() if last_retrain else None)


def count_new_rows(cfg: TuneopsConfig) -> tuple[int, pd.DataFrame | None]:
    """Rows of newly labelled data (0 when none is configured)."""
    if not cfg.monitoring.retrain.new_data:
        return 0, None
    frame = read_dataset(cfg.monitoring.retrain.new_data)
    return len(frame), frame


def last_retrain(model_name: str, experiment: str) -> datetime | None:
    """When monitoring last triggered a retraining of this model (from its MLflow monitoring runs)."""
    from tuneops.registry.tracking import client, experiment_id

    runs = client().search_runs([experiment_id(experiment)],
                                f"tags.`{TRIGGER_TAG}` = 'True' and tags.`tuneops.model` = '{model_name}'",
                                order_by=["attribute.start_time DESC"], max_results=1)
    return datetime.fromtimestamp(runs[0].info.start_time / 1000, UTC) if runs else None


def replay_config(train_cfg: TuneopsConfig, previous: pd.DataFrame, new: pd.DataFrame, out: str) -> tuple[
        dict[str, Any], str, str]:
    """Write previous + new rows as one training file; the champion's config pointed at it.

    Labels that only the new data has are added to ``data.select_labels`` (when the champion used a
    subset), otherwise the new intents would be filtered out again. Returns (config, data URI, fingerprint).
    """
    from tuneops.data.rows import fingerprint

    d, keyed = train_cfg.data, train_cfg.split_data()  # the columns that key a row and hold its target
    columns = [c for c in previous.columns if c in new.columns]
    missing = [c for c in (keyed.text_column, keyed.label_column) if c not in new.columns]
    if missing:
        raise DataError(f"the new labelled data lacks column(s) {', '.join(missing)} that "
                        f"{train_cfg.registry.model_name} trains on (has {list(new.columns)}); export it with the "
                        "training data's columns")
    combined = pd.concat([previous[columns], new[columns]], ignore_index=True).drop_duplicates()
    digest = fingerprint(combined, [keyed.text_column, keyed.label_column])
    uri = f"{out.rstrip('/')}/retrain-{digest}.csv"
    write_bytes(combined.to_csv(index=False).encode(), uri)
    raw = train_cfg.model_dump(mode="json")
    raw["data"]["path"] = uri
    if d.select_labels is not None:
        extra = sorted(set(new[d.label_column].astype(str)) - set(d.select_labels))
        raw["data"]["select_labels"] = [*d.select_labels, *extra]
    return raw, uri, digest


def retrain_request(cfg: TuneopsConfig, train_cfg: TuneopsConfig, new: pd.DataFrame, champion_version: str
                    ) -> tuple[dict[str, Any], str, str]:
    """The training run to start on previous + new data: (its config, the data URI, its idempotency key).

    The key derives from the champion version and the combined data's fingerprint, so two triggers for
    the same situation ask for the same run (tuneops.tasks.production starts it).
    """
    previous = read_dataset(train_cfg.data.path)
    out = cfg.monitoring.retrain.output or str(settings.home() / "retrain")
    params, uri, digest = replay_config(train_cfg, previous, new, out)
    return params, uri, f"retrain-{cfg.registry.model_name}-v{champion_version}-{digest}"
