"""Score texts with a registered model: shared by `tuneops predict` and the score_batch flow.

One path from texts to predictions (:func:`score_texts`): resolve the version (the champion unless
one is named), load that exact version, score the configured text column. `tuneops predict` writes
the result to one file; score_batch stamps each row (timestamp, request id) and appends it to the
date-partitioned production log that monitoring reads (:func:`append_prediction_log`).

A classifier gives ``text, label, confidence, model_version`` per row; a causal LM (model.task:
causal_lm) gives ``prompt, response, prompt_tokens, response_tokens, finish_reason, latency_ms,
model_version``: the registered model's input column, then every column its pyfunc answers with.

Both stream: the input is read ``serving.scoring_chunk_rows`` rows at a time (CSV and JSON Lines in chunks,
Parquet by record batches; an S3 object by ranged reads of at most 8 MB, never whole), each chunk is scored and
written before the next is read, so memory does not grow with the input (an S3 output is assembled in memory and
put once). Both load the model through :func:`load_verified`: the configured runtime
(``serving.runtime``), checked against fp32 first when it is not fp32.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args

import numpy as np
import pandas as pd

from tuneops.config import TuneopsConfig
from tuneops.data.storage import Source, count_rows, is_s3, list_sources, open_binary, parse, read_dataset, write_bytes
from tuneops.errors import DataError, RegistryError
from tuneops.progress import Meter

log = logging.getLogger("tuneops.serving.scoring")

LogFormat = Literal["jsonl", "parquet"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)


@dataclass
class Written:
    """What `tuneops predict` wrote: how many rows, by which version."""

    rows: int
    version: str
    runtime: str = "fp32"


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
    from tuneops.registry import versions as registry

    if version is not None:
        return str(version)
    champion = registry.alias_version(name, "champion")
    if champion is None:
        raise RegistryError(f"model {name} has no champion yet; train one (`tuneops train CONFIG`) or name a "
                            "version (--version N on the CLI, version=N for the score_batch flow)")
    return champion


def _installed_version() -> str:
    from importlib.metadata import version

    return version("tuneops")


def load_model(name: str, version: str, runtime: str = "fp32", batch_size: int | None = None,
               share_base: bool = False) -> Any:
    """The registered pyfunc (``mlflow.pyfunc.PyFuncModel``) on an inference runtime, or a RegistryError that
    names it. This does not check the runtime against fp32: :func:`load_verified` does. ``share_base``: a process
    that serves several models asks the pyfunc to share one copy of a base's weights between them."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_config: dict[str, Any] = {"runtime": runtime}
    if batch_size is not None:
        model_config["batch_size"] = batch_size
    if share_base:
        model_config["share_base"] = True
    from tuneops.serving.runtimes import require_model_config

    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}", model_config=model_config)
    except MlflowException as exc:
        raise RegistryError(f"cannot load {name} v{version}: {exc.message}") from None
    except OSError as exc:
        raise RegistryError(f"cannot load {name} v{version}: its artifacts are unreadable ({exc}); check that the "
                            "MLflow artifact store is reachable from this machine") from None
    except (AttributeError, ImportError, ModuleNotFoundError, pickle.UnpicklingError) as exc:
        # The pickled pyfunc names a class this tuneops does not have (a version from a newer or a foreign release).
        raise RegistryError(f"cannot load {name} v{version}: its pickled model names code this tuneops "
                            f"{_installed_version()} does not have ({exc}); serve it with the tuneops release that "
                            "registered it, or register it again with this one") from None
    require_model_config(model, runtime, f"{name} v{version}")
    return model


def load_verified(cfg: TuneopsConfig, version: str, share_base: bool = False) -> tuple[Any, str]:
    """The registered pyfunc on the configured runtime (``serving.runtime``; auto: the fastest verified one), checked
    against fp32 on the validation split first when it is not fp32 (once per version: the result is a tag), and
    the runtime's name. A runtime that failed its check is refused with its figures."""
    from tuneops.serving import runtime_check

    runtime = runtime_check.choose(cfg, version)
    if runtime != "fp32":
        runtime_check.verified(cfg, version, runtime)
    return load_model(cfg.registry.model_name, version, runtime, cfg.serving.scoring_batch_size, share_base), runtime


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


# ----------------------------------------------------------------------------- streaming


def _chunks_of(source: Source, rows: int) -> Iterator[pd.DataFrame]:
    """One file's rows, ``rows`` at a time, local or on S3 (streamed by ranged reads, never fetched whole): CSV and
    JSON Lines by pandas' chunked readers, Parquet by record batches. Errors name the file, as
    :func:`tuneops.data.storage.parse`'s."""
    with open_binary(source) as stream:
        yield from _chunks_of_stream(stream, source, rows)


def _chunks_of_stream(stream: BinaryIO, source: Source, rows: int) -> Iterator[pd.DataFrame]:
    first = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
    if not first.strip():
        parse(b"", source)  # raises: the file is empty
    if first.startswith(b"\xef\xbb\xbf"):
        parse(first, source)  # raises: byte-order mark
    kind = {".csv": "CSV", ".parquet": "Parquet"}.get(source.suffix, "JSON Lines")
    try:
        if source.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(stream).iter_batches(batch_size=rows):
                yield batch.to_pandas()
            return
        with io.TextIOWrapper(stream, encoding="utf-8", newline="" if source.suffix == ".csv" else None) as text:
            if source.suffix == ".csv":
                reader = pd.read_csv(text, dtype=str, keep_default_na=False, na_values=[""], chunksize=rows)
            else:
                reader = pd.read_json(text, lines=True, dtype=False, chunksize=rows)
            with reader:
                yield from reader
    except UnicodeDecodeError:
        raise DataError(f"{source.uri} is not UTF-8 (latin-1 or cp1252?); re-export it as UTF-8") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first_line = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"{source.uri} cannot be parsed as {kind}: {first_line}; fix or re-export the file") from None


def iter_texts(uri: str, text_column: str, rows: int) -> Iterator[pd.DataFrame]:
    """The rows of a file, folder or S3 prefix, ``rows`` at a time, each chunk checked for the text column;
    refused early if there is nothing to score."""
    seen = 0
    for source in list_sources(str(uri)):
        for chunk in _chunks_of(source, rows):
            check_text_column(chunk, text_column, source=source.uri)
            if len(chunk):
                seen += len(chunk)
                yield chunk
    if not seen:
        raise DataError(f"{uri} has a header but no rows; there is nothing to score")


class TableWriter:
    """Predictions written chunk by chunk to one file or S3 object (CSV, JSON Lines or Parquet, by extension).

    A local file is written under a temporary name and renamed when complete, so a failed run leaves no
    half-written output; an S3 object is put once, when complete.
    """

    def __init__(self, uri: str | Path, fmt: str | None = None):
        self.uri = str(uri)
        suffix = fmt or Path(self.uri).suffix
        if not suffix:
            raise DataError(f"output {self.uri} has no extension; use .csv, .jsonl or .parquet")
        self.fmt = suffix.lower().lstrip(".")
        if self.fmt == "json":
            self.fmt = "jsonl"
        if self.fmt not in ("csv", "jsonl", "parquet"):
            raise DataError(f"output {self.uri} has format '{self.fmt}'; use .csv, .jsonl or .parquet")
        self.rows = 0
        self._sink: Any = None
        self._parquet: Any = None
        self._partial: Path | None = None

    def _open(self) -> None:
        if is_s3(self.uri):
            self._sink = io.BytesIO()
            return
        target = Path(self.uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        self._sink = self._partial.open("wb")

    def write(self, frame: pd.DataFrame) -> None:
        if self._sink is None:
            self._open()
        if self.fmt == "csv":
            self._sink.write(frame.to_csv(index=False, header=self.rows == 0).encode("utf-8"))
        elif self.fmt == "jsonl":
            text = frame.to_json(orient="records", lines=True, force_ascii=False)
            self._sink.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._sink, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self.rows += len(frame)

    def close(self) -> None:
        """Finish the file (rename it into place, or put the S3 object)."""
        if self._sink is None:
            return
        if self._parquet is not None:
            self._parquet.close()
        if is_s3(self.uri):
            write_bytes(self._sink.getvalue(), self.uri)
        else:
            self._sink.close()
            assert self._partial is not None
            self._partial.replace(self.uri)

    def abort(self) -> None:
        """Drop what was written (a failed run leaves nothing behind)."""
        if self._sink is not None and not is_s3(self.uri):
            self._sink.close()
            if self._partial is not None:
                self._partial.unlink(missing_ok=True)
        self._sink = None


Progress = Callable[[int, float], None]
"""Called with the rows scored so far and the seconds since scoring began."""


def log_progress(total: int | None) -> Progress:
    """The default progress: about every 10 s, 'scored 1,200/5,000 rows, 85 rows/s, about 45 s left' on the
    ``tuneops.serving.scoring`` logger (``total``: the input's rows, None where unknown, as on S3)."""
    return Meter(total, "rows", lambda text: log.info("scored %s", text))


def stream_scores(cfg: TuneopsConfig, version: str, input_uri: str, writer: TableWriter,
                  transform: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame,
                  progress: Progress | None = None) -> str:
    """Read, score and write the input chunk by chunk; returns the runtime that scored it.

    The first chunk is read (and its text column checked) before any model loads; progress is reported after
    every chunk once the input spans more than one (by default, :func:`log_progress`).
    """
    column = input_column(cfg)
    chunks = iter_texts(input_uri, column, cfg.serving.scoring_chunk_rows)
    first = next(chunks)
    progress = progress or log_progress(None if is_s3(str(input_uri)) else count_rows(list_sources(str(input_uri))))
    model, runtime = load_verified(cfg, version)
    began, done = time.perf_counter(), 0
    try:
        for index, chunk in enumerate(_chain(first, chunks)):
            writer.write(transform(score_frame(model, chunk, column, version)))
            done += len(chunk)
            if index or len(chunk) == cfg.serving.scoring_chunk_rows:
                progress(done, time.perf_counter() - began)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return runtime


def _chain(first: pd.DataFrame, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield first
    yield from rest


def predict_file(cfg: TuneopsConfig, input_path: str, output_path: str, version: str | None = None,
                 progress: Progress | None = None) -> Written:
    """Score every text in a file with the champion (or ``version``) on the configured runtime and write the
    predictions, chunk by chunk."""
    name = cfg.registry.model_name
    version = resolve_version(name, version)
    writer = TableWriter(output_path)
    runtime = stream_scores(cfg, version, input_path, writer, progress=progress)
    return Written(writer.rows, version, runtime)


def score_into_log(cfg: TuneopsConfig, version: str, input_uri: str, output: str, fmt: str = "jsonl",
                   now: datetime | None = None, progress: Progress | None = None) -> BatchResult:
    """score_batch's path: every text under ``input_uri`` scored chunk by chunk and written, stamped (one
    timestamp for the batch, a request id per row), as one new file under the output's date partition."""
    now = now or datetime.now(UTC)
    uri = log_file_uri(output, now, fmt)
    writer = TableWriter(uri, fmt)
    stream_scores(cfg, version, input_uri, writer, transform=lambda scored: stamp_predictions(scored, now),
                  progress=progress)
    return BatchResult(rows=writer.rows, version=version, uri=uri)
