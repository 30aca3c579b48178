"""Score texts with a registered model: shared by `tuneops predict` and the score_batch flow.

One path from texts to predictions (:func:`score_texts`): resolve the version (the champion unless
one is named), load that exact version, score the configured text column. `tuneops predict` writes
the result to one file; score_batch stamps each row (timestamp, request id) and appends it to the
date-partitioned production log that monitoring reads (:func:`append_prediction_log`).

A classifier gives ``text, label, confidence, model_version`` per row; a causal LM (model.task:
causal_lm) gives ``prompt, response, prompt_tokens, response_tokens, finish_reason, latency_ms,
model_version``: the registered model's input column, then every column its pyfunc answers with.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from tuneops.config import TuneopsConfig
from tuneops.errors import DataError, RegistryError
from tuneops.storage import is_s3, read_dataset, write_bytes

LogFormat = Literal["jsonl", "parquet"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)


@dataclass
class Written:
    """What `tuneops predict` wrote: how many rows, by which version."""

    rows: int
    version: str


@dataclass
class BatchResult:
    """What one score_batch run appended to the production log."""

    rows: int
    version: str
    uri: str


def resolve_version(name: str, version: str | None) -> str:
    """The requested version, or the champion's, with a clear error when there is none.

    The alias is resolved to a number once, before loading, so the version recorded with every
    prediction is the one that made it even if the champion moves while a batch is scored.
    """
    from tuneops import registry

    if version is not None:
        return str(version)
    champion = registry.alias_version(name, "champion")
    if champion is None:
        raise RegistryError(f"model {name} has no champion yet; train one (`tuneops train CONFIG`) or name a "
                            "version (--version N on the CLI, version=N for the score_batch flow)")
    return champion


def load_model(name: str, version: str, model_config: dict[str, Any] | None = None) -> Any:
    """The registered pyfunc (``mlflow.pyfunc.PyFuncModel``), or a RegistryError that names it.

    ``model_config`` reaches the pyfunc as ``context.model_config`` (`tuneops serve` passes the runtime in it).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}", model_config=model_config)
    except MlflowException as exc:
        raise RegistryError(f"cannot load {name} v{version}: {exc.message}") from None
    except OSError as exc:
        raise RegistryError(f"cannot load {name} v{version}: its artifacts are unreadable ({exc}); check that the "
                            "MLflow artifact store is reachable from this machine") from None


def check_text_column(frame: pd.DataFrame, text_column: str, source: str = "input") -> None:
    """Fail before loading a model when the texts are not where the config says."""
    if text_column not in frame.columns:
        raise DataError(f"{source} has no '{text_column}' column (columns: {list(frame.columns)}); "
                        "set data.text_column in the config (data.prompt_column for a causal LM)")


def input_column(cfg: TuneopsConfig) -> str:
    """The column a model reads (the family's: a classifier's text column, a causal LM's prompt column)."""
    from tuneops import families

    return families.of(cfg).input_column(cfg)


def require_prediction_log(cfg: TuneopsConfig, stage: str) -> None:
    """Refuse a stage that needs the production prediction log of a family that has none."""
    from tuneops import families

    families.require(cfg, stage, bool(families.of(cfg).prediction_columns))


def _as_cell_text(value: Any) -> str:
    """A table cell as model input text: chat messages (a list read from JSONL/Parquet) become JSON text."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, list | tuple | np.ndarray):
        return json.dumps([dict(m) for m in value])
    return str(value)


def score_frame(model: Any, frame: pd.DataFrame, text_column: str, version: str) -> pd.DataFrame:
    """Predict every row with a loaded pyfunc: its input column (as the model's signature names it), every
    output column, and the model version.

    A classifier: text, label, confidence, model_version per row. A generator (a registered causal LM,
    whose input is a ``prompt``): prompt, response, prompt_tokens, response_tokens, finish_reason,
    latency_ms, model_version.
    """
    check_text_column(frame, text_column)
    texts = frame[text_column].map(_as_cell_text)
    schema = model.metadata.get_input_schema()
    name = schema.input_names()[0] if schema is not None and schema.input_names() else "text"
    out = model.predict(pd.DataFrame({name: texts})).reset_index(drop=True)
    scored = pd.concat([pd.DataFrame({name: texts.to_numpy()}), out], axis=1)
    scored["model_version"] = version
    return scored


def read_texts(uri: str, text_column: str) -> pd.DataFrame:
    """Read a file, folder or S3 prefix of texts; refuse it early if there is nothing to score."""
    frame = read_dataset(str(uri))
    check_text_column(frame, text_column, source=str(uri))
    if frame.empty:
        raise DataError(f"{uri} has a header but no rows; there is nothing to score")
    return frame


def score_texts(name: str, version: str, frame: pd.DataFrame, text_column: str) -> pd.DataFrame:
    """Load ``name`` v``version`` and score the frame: the one scoring path predict and score_batch share."""
    check_text_column(frame, text_column)
    return score_frame(load_model(name, version), frame, text_column, version)


def encode_table(frame: pd.DataFrame, fmt: str, name: str = "output") -> bytes:
    """Serialise predictions as CSV, JSON Lines or Parquet bytes (so S3 and local writes share one path)."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    if fmt in ("jsonl", "json"):
        return frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise DataError(f"{name} has format '{fmt}'; use .csv, .jsonl or .parquet")


def write_table(frame: pd.DataFrame, uri: str | Path) -> None:
    """Write predictions to one local file or S3 object; the extension picks the format."""
    uri = str(uri)
    suffix = Path(uri).suffix
    if not suffix:
        raise DataError(f"output {uri} has no extension; use .csv, .jsonl or .parquet")
    write_bytes(encode_table(frame, suffix, name=f"output {uri}"), uri)


def stamp_predictions(scored: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Add what a production log row needs beyond the prediction: when (UTC, ISO 8601) and a request id.

    Each row gets its own uuid4 so a downstream label or complaint can point at one prediction.
    """
    stamped = scored.copy()
    stamped["model_version"] = stamped["model_version"].astype(str)
    stamped["timestamp"] = now.astimezone(UTC).isoformat(timespec="milliseconds")
    stamped["request_id"] = [str(uuid.uuid4()) for _ in range(len(stamped))]
    return stamped


def log_file_uri(output: str, now: datetime, fmt: str) -> str:
    """``<output>/date=YYYY-MM-DD/predictions-<UTC time>-<short uuid>.<ext>``: a new name for every batch.

    Hive-style ``date=`` folders let monitoring read one day (or a range) without listing the rest;
    the random suffix means two batches in the same second never collide, so appending never
    overwrites an earlier batch.
    """
    if fmt not in LOG_FORMATS:
        raise DataError(f"prediction log format '{fmt}' is not supported; use one of {', '.join(LOG_FORMATS)}")
    if Path(output.rstrip("/")).suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        raise DataError(f"output {output} looks like a file; score_batch appends to a folder or S3 prefix "
                        "(e.g. s3://bucket/predictions), one new file per batch")
    if not is_s3(output) and Path(output).is_file():
        raise DataError(f"output {output} is a file; point it at a folder for the prediction log")
    utc = now.astimezone(UTC)
    name = f"predictions-{utc:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}.{fmt}"
    return f"{output.rstrip('/')}/date={utc:%Y-%m-%d}/{name}"


def append_prediction_log(scored: pd.DataFrame, output: str, fmt: str = "jsonl",
                          now: datetime | None = None) -> str:
    """Stamp the predictions and write them as one new file under the output's date partition."""
    now = now or datetime.now(UTC)
    uri = log_file_uri(output, now, fmt)
    write_bytes(encode_table(stamp_predictions(scored, now), fmt, name=f"output {uri}"), uri)
    return uri


def predict_file(cfg: TuneopsConfig, input_path: str, output_path: str, version: str | None = None) -> Written:
    """Score every text in a file with the champion (or ``version``) and write the predictions."""
    name, column = cfg.registry.model_name, input_column(cfg)
    version = resolve_version(name, version)
    frame = read_texts(input_path, column)
    scored = score_texts(name, version, frame, column)
    write_table(scored, output_path)
    return Written(len(scored), version)
