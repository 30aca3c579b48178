"""The monitoring check shared by `tuneops monitor` and the monitor_production flow.

1. :func:`read_window` reads the production prediction log (file, folder or ``s3://`` prefix) and
   keeps the rows of a time window, listing only the ``date=YYYY-MM-DD`` partitions it needs;
2. :func:`resolve_reference` follows registry lineage: the champion version's run holds the resolved
   training config (``config/resolved_config.json``) and its split files, and the version's
   ``tuneops.data.path`` tag names the training data. A seeded sample of that data is the text
   reference; the held-out (validation + test) rows, scored once by the champion, are the reference
   for predicted labels and confidences (a model is over-confident on its own training rows). Both
   are cached per version;
3. :func:`run_check` runs :func:`monitoring.drift.check_drift` and writes the HTML report.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tuneops import families, settings
from tuneops.config import TuneopsConfig, validate_config
from tuneops.data.storage import Source, list_sources, parse, read_bytes
from tuneops.errors import DataError, RegistryError
from tuneops.families import require_log_columns
from tuneops.monitoring.drift import DriftResult, check_drift

DATE_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


@dataclass
class Window:
    """A half-open UTC time window [start, end); None on either side leaves it open."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def last_hours(cls, hours: float, end: datetime | None = None) -> Window:
        end = end or datetime.now(UTC)
        return cls(end - timedelta(hours=hours), end)

    def describe(self) -> str:
        fmt = "%Y-%m-%d %H:%M UTC"
        return (f"{self.start.strftime(fmt) if self.start else 'beginning'} .. "
                f"{self.end.strftime(fmt) if self.end else 'now'}")


@dataclass
class Reference:
    """The champion the production traffic is compared with, and its (scored) training sample."""

    model_name: str
    version: str
    data_path: str
    run_id: str
    config: TuneopsConfig
    frame: pd.DataFrame
    predictions: pd.DataFrame


def _in_partition_range(source: Source, window: Window) -> bool:
    match = DATE_PART.search(source.uri)
    if match is None:
        return True
    day = datetime.strptime(match.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
    if window.start is not None and day + timedelta(days=1) <= window.start:
        return False
    return not (window.end is not None and day >= window.end)


def read_window(uri: str, window: Window, required: tuple[str, ...] = ("text",)) -> pd.DataFrame:
    """The prediction-log rows whose timestamp lies in the window (files outside it are not read)."""
    sources = [s for s in list_sources(uri) if _in_partition_range(s, window)]
    if not sources:
        raise DataError(f"{uri} has no prediction-log partitions in {window.describe()}; is score_batch writing "
                        "there, and is the window right?")
    frame = pd.concat([parse(read_bytes(s), s) for s in sources], ignore_index=True)
    require_log_columns(frame, f"prediction log {uri}", required)
    if "timestamp" in frame.columns and (window.start or window.end):
        ts = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
        keep = ts.notna()
        if window.start is not None:
            keep &= ts >= pd.Timestamp(window.start)
        if window.end is not None:
            keep &= ts < pd.Timestamp(window.end)
        frame = frame[keep].reset_index(drop=True)
    return frame


def champion_lineage(model_name: str) -> tuple[str, str, str, TuneopsConfig]:
    """(version, training data path, run id, training config) of the champion, from registry lineage."""
    from mlflow.exceptions import MlflowException

    from tuneops.registry import versions as registry
    from tuneops.registry.tracking import client

    version = registry.alias_version(model_name, "champion")
    if version is None:
        raise RegistryError(f"model {model_name} has no champion; monitoring compares production traffic with the "
                            "champion's training data, so train and promote one first")
    mv = client().get_model_version(model_name, version)
    data_path = mv.tags.get("tuneops.data.path")
    if not data_path:
        raise RegistryError(f"{model_name} v{version} has no tuneops.data.path tag; it was not registered by "
                            "train_model, so its training data is unknown")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client().download_artifacts(mv.run_id, "config/resolved_config.json", tmp)
            raw = json.loads(Path(local).read_text())
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot read the training config of {model_name} v{version} (run {mv.run_id}): "
                            f"{exc}") from None
    return version, data_path, mv.run_id, validate_config(raw, source=f"{model_name} v{version} training config",
                                                          recorded=True)


def resolve_reference(cfg: TuneopsConfig) -> Reference:
    """The champion's training data, sampled and scored by the champion (cached per version and sample).

    The input column is named ``text`` in both frames whatever the family calls it (a prompt, for a
    generator); the scored frame keeps every output column the model gives.
    """
    from tuneops.data.rows import select_subset
    from tuneops.data.storage import read_dataset
    from tuneops.serving.scoring import score_texts

    name, mon = cfg.registry.model_name, cfg.monitoring
    version, data_path, run_id, train_cfg = champion_lineage(name)
    cache = settings.home() / "monitoring" / f"reference-{name}-v{version}-{mon.reference_rows}-{mon.seed}"
    if (cache / "predictions.parquet").is_file():
        return Reference(name, version, data_path, run_id, train_cfg, pd.read_parquet(cache / "texts.parquet"),
                         pd.read_parquet(cache / "predictions.parquet"))
    family = families.of(train_cfg)
    text_col = family.input_column(train_cfg)
    data = select_subset(read_dataset(train_cfg.data.path), train_cfg.data)
    texts = data.sample(min(mon.reference_rows, len(data)), random_state=mon.seed)
    texts = pd.DataFrame({"text": texts[text_col].astype(str).to_numpy()})
    held_out = _held_out_rows(run_id, text_col)
    held_out = held_out.sample(min(mon.reference_rows, len(held_out)), random_state=mon.seed)
    scored = (score_texts(name, version, held_out, text_col).drop(columns=["model_version"])
              .rename(columns={family.prediction_columns[0]: "text"}).reset_index(drop=True))
    cache.mkdir(parents=True, exist_ok=True)
    texts.to_parquet(cache / "texts.parquet", index=False)
    scored.to_parquet(cache / "predictions.parquet", index=False)
    return Reference(name, version, data_path, run_id, train_cfg, texts, scored)


def _held_out_rows(run_id: str, text_column: str) -> pd.DataFrame:
    """The champion's validation and test splits, stored with its training run: rows it never trained on."""
    from mlflow.exceptions import MlflowException

    from tuneops.registry.tracking import client

    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("validation", "test"):
            try:
                frames.append(pd.read_parquet(client().download_artifacts(run_id, f"splits/{name}.parquet", tmp)))
            except (MlflowException, OSError) as exc:
                raise RegistryError(f"cannot read the {name} split of training run {run_id} ({exc}); monitoring "
                                    "scores the champion's held-out rows as the prediction reference") from None
    return pd.concat(frames, ignore_index=True)[[text_column]]


def run_check(cfg: TuneopsConfig, predictions: str, window: Window, report_file: str | Path,
              reference: Reference | None = None) -> tuple[DriftResult, Reference]:
    """Read the window, resolve the reference, compare, write the HTML report."""
    family = families.of(cfg)
    families.require(cfg, "drift monitoring", family.prediction_drift is not None)
    current = read_window(predictions, window, family.prediction_columns[:1])
    reference = reference or resolve_reference(cfg)
    return check_rows(cfg, current, reference, report_file), reference


def check_rows(cfg: TuneopsConfig, current: pd.DataFrame, reference: Reference,
               report_file: str | Path | None = None) -> DriftResult:
    """Compare prediction-log rows (as score_batch writes them) with the champion's reference: the input signals
    on the logged input, the family's output signals on the rest."""
    family = families.of(reference.config)
    current = current.rename(columns={family.prediction_columns[0]: "text"})
    comparisons = family.prediction_drift(reference.predictions, current, reference.config)
    return check_drift(reference.frame, current, cfg.monitoring, reference.config.model.base, comparisons,
                       report_file)
