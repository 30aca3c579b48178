"""`tuneops serve`: the registry champion (or a pinned version) over HTTP, with MLflow's scoring contract.

One server process holds one loaded pyfunc at a time (:class:`ModelSlot`) and answers:

- ``POST /invocations``: ``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances`` (JSON), or a CSV
  body, as `mlflow models serve` takes them; the answer is ``{"predictions": [...], "model_version": "N",
  "request_ids": [...]}`` (the pyfunc's output rows, as MLflow returns them) and the header
  ``X-Tuneops-Model-Version``;
- ``GET /ping``, ``/health`` (200 once the model is loaded), ``/version`` (the MLflow version, like MLflow's
  server), ``/metadata`` (model name, version, alias, test metrics, data fingerprint, serving counters).

Concurrent requests are coalesced into one model call (:class:`MicroBatcher`: up to ``serving.max_batch_size``
rows, waiting at most ``serving.max_wait_ms`` for company) and the results are split back per request. A
background thread (:class:`AliasFollower`) looks every ``serving.poll_interval_s`` at where the followed alias
(``champion``) points; when it moves, the new version is loaded and warmed up beside the old one, then swapped in
by one assignment: a model call that already started finishes on the model it started with, and every answer
names the version that made it. Answered rows are stamped like score_batch's and appended to the prediction log
(:class:`OnlinePredictionLog`), so monitoring sees online traffic. A request that is wrong gets a 4xx JSON body
naming the problem (:class:`BadRequest`); an unexpected failure a 500 JSON body, and its traceback in the log.

The server never branches on the task family: the input column is the one the registered signature names (a
classifier's ``text``, a causal LM's ``prompt``), the output columns are whatever the family's pyfunc returns.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tuneops.errors import ConfigError, RegistryError, TuneopsError

if TYPE_CHECKING:
    import pandas as pd

    from tuneops.config import ServingConfig, TuneopsConfig

log = logging.getLogger("tuneops.serving.server")

SPEC_ENV = "TUNEOPS_SERVE_SPEC"
"""How the CLI hands the serve settings to uvicorn's worker processes (JSON of a :class:`ServeSpec`)."""
VERSION_HEADER = "X-Tuneops-Model-Version"
FOLLOWED_ALIAS = "champion"
REQUEST_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


# --------------------------------------------------------------------------------------------- what to serve


@dataclass(frozen=True)
class ServeSpec:
    """What a server process serves and how: plain data, so it travels to worker processes as JSON."""

    model_name: str | None
    """Registered model name; None when serving a plain URI (a ``runs:/`` URI or a folder)."""
    alias: str | None
    """The alias followed (its moves are swapped in); None when the version is pinned."""
    version: str | None
    """The pinned version; None when following the alias."""
    model_uri: str | None
    """A URI outside the registry (``runs:/...``, a folder); None for a registered model."""
    serving: dict[str, Any]
    """The ``serving`` config section (CLI flags already applied)."""
    config: dict[str, Any] | None
    """The resolved config (``--config``), which a runtime other than fp32 needs for its agreement check."""
    log_output: str | None
    """Prediction-log folder or ``s3://`` prefix; None: online predictions are not logged."""

    def settings(self) -> ServingConfig:
        from tuneops.config import ServingConfig

        return ServingConfig.model_validate(self.serving)

    def describe(self) -> str:
        if self.model_uri:
            return self.model_uri
        return f"models:/{self.model_name}@{self.alias}" if self.alias else f"models:/{self.model_name}/{self.version}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSpec:
        return cls(**json.loads(text))


def default_log_output(model_name: str) -> str:
    """Where online predictions go when monitoring.predictions is not set: ``$TUNEOPS_HOME/predictions/<name>``."""
    from tuneops import settings

    return str(settings.home() / "predictions" / model_name)


def build_spec(cfg: TuneopsConfig | None, serving: ServingConfig, model_uri: str | None = None,
               version: str | None = None) -> ServeSpec:
    """The one description of what to serve, from a config and/or a model URI (the URI wins over the config's
    ``registry.model_name``); ``--version`` pins a version, else the ``champion`` alias is followed."""
    if cfg is None and model_uri is None:
        raise ConfigError("tuneops serve needs --config CONFIG (serves its registry.model_name's champion) or "
                          "--model-uri URI (e.g. models:/banking77-intent@champion)")
    name, alias, plain_uri = None, FOLLOWED_ALIAS, None
    if model_uri is not None:
        match = _MODEL_URI.match(model_uri)
        if match is None:  # runs:/..., a folder: one fixed model, nothing to follow
            if version is not None:
                raise ConfigError(f"--version {version} only applies to a registered model; {model_uri} is not a "
                                  "models:/NAME@ALIAS URI")
            plain_uri, alias = model_uri, None
        else:
            name, alias = match["name"], match["alias"]
            if match["version"] is not None:
                if version is not None and version != match["version"]:
                    raise ConfigError(f"--version {version} contradicts {model_uri}; give one of them")
                version, alias = match["version"], None
    else:
        name = cfg.registry.model_name
    if version is not None:
        alias = None
    log_output = None
    if serving.log_predictions:
        configured = cfg.monitoring.predictions if cfg is not None else None
        log_output = configured or default_log_output(name or "model")
    return ServeSpec(model_name=name, alias=alias, version=str(version) if version is not None else None,
                     model_uri=plain_uri, serving=serving.model_dump(mode="json"), log_output=log_output,
                     config=cfg.model_dump(mode="json") if cfg is not None else None)


# --------------------------------------------------------------------------------------------- the loaded model


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version and what the server says about it."""

    model: Any
    """The ``mlflow.pyfunc.PyFuncModel``."""
    version: str
    """What answers say made them: the registry version number (a plain URI: the URI)."""
    column: str
    """The input column the model's signature names (``text``, ``prompt``)."""
    metadata: dict[str, Any]


def _input_column(model: Any) -> str:
    schema = model.metadata.get_input_schema()
    return schema.input_names()[0] if schema is not None and schema.input_names() else "text"


def _version_metadata(name: str, version: str) -> dict[str, Any]:
    """What the registry records for a version: its run, aliases, test metrics, data fingerprint, gate verdict."""
    from tuneops.registry.tracking import client

    mv = client().get_model_version(name, version)
    tags = dict(mv.tags)
    metrics = {k.removeprefix("tuneops.metric."): float(v) for k, v in tags.items()
               if k.startswith("tuneops.metric.")}
    return {"model_name": name, "model_version": str(mv.version), "aliases": sorted(mv.aliases or []),
            "run_id": mv.run_id, "task": tags.get("tuneops.task"), "base_model": tags.get("tuneops.base_model"),
            "method": tags.get("tuneops.method"), "metrics": metrics,
            "data_fingerprint": tags.get("tuneops.data.fingerprint"),
            "split_fingerprints": {k.split(".")[2]: v for k, v in tags.items()
                                   if k.startswith("tuneops.split.") and k.endswith(".fingerprint")},
            "code_version": tags.get("tuneops.code_version"),
            "gate": {"passed": tags.get("tuneops.gate.passed") == "True", "reason": tags.get("tuneops.gate.reason")},
            "registered_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")}


def load(spec: ServeSpec, version: str | None) -> LoadedModel:
    """Load ``version`` of the spec's model (or its plain URI) with the configured runtime, and warm it up.

    The warm-up call (one row, not logged) means the first real request does not pay for lazy initialisation,
    and a version that cannot predict is refused here, before it is swapped in.
    """
    import pandas as pd

    from tuneops.serving import scoring

    runtime = spec.serving.get("runtime", "fp32")
    if spec.model_uri is not None or spec.config is None:
        if runtime != "fp32":  # the agreement check is recorded on a registered version, under a config's rules
            raise ConfigError(f"serving.runtime {runtime} needs a registered model served with --config CONFIG "
                              "(its agreement check with fp32 is recorded on the version); use serving.runtime: fp32")
    if spec.model_uri is not None:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            model = mlflow.pyfunc.load_model(spec.model_uri)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot load {spec.model_uri}: {getattr(exc, 'message', exc)}") from None
        label = spec.model_uri
        meta: dict[str, Any] = {"model_name": None, "model_version": label, "aliases": [], "model_uri": label}
    else:
        assert spec.model_name is not None and version is not None
        if spec.config is not None:  # the configured runtime (auto: the fastest verified), checked against fp32
            from tuneops.config import TuneopsConfig

            cfg = TuneopsConfig.model_validate({**spec.config, "serving": spec.serving})
            model, runtime = scoring.load_verified(cfg, version)
        else:
            model = scoring.load_model(spec.model_name, version)
        label = str(version)
        meta = _version_metadata(spec.model_name, label)
    column = _input_column(model)
    scoring.score_frame(model, pd.DataFrame({column: ["warm-up"]}), column, label)
    meta.update({"input_column": column, "runtime": runtime,
                 "loaded_at": datetime.now(UTC).isoformat(timespec="seconds")})
    return LoadedModel(model=model, version=label, column=column, metadata=meta)


def resolve(spec: ServeSpec) -> str | None:
    """The version to serve now: the pinned one, or where the followed alias points (RegistryError if nowhere)."""
    from tuneops.registry import versions as registry

    if spec.model_uri is not None:
        return None
    if spec.alias is None:
        return spec.version
    found = registry.alias_version(spec.model_name, spec.alias)
    if found is None:
        raise RegistryError(f"model {spec.model_name} has no '{spec.alias}' alias in the MLflow registry at "
                            f"{_tracking_uri()}; train one (`tuneops train CONFIG`), point MLFLOW_TRACKING_URI / "
                            "TUNEOPS_HOME at the store that holds it, or pin a version with --version N")
    return found


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


class ModelSlot:
    """The model this process serves. Swapping is one attribute assignment (atomic under the GIL): a caller that
    took :attr:`current` keeps that model for its whole call, whatever is swapped in meanwhile."""

    def __init__(self, loaded: LoadedModel):
        self.current = loaded

    def swap(self, loaded: LoadedModel) -> LoadedModel:
        old, self.current = self.current, loaded
        return old


class AliasFollower:
    """A daemon thread that follows the alias: when it moves, load the new version fully, then swap it in.

    A registry that cannot be reached, or a version that fails to load, is logged and the current model keeps
    serving (a version that failed is not retried until the alias moves again): the server never stops answering
    because of what happens in the registry.
    """

    def __init__(self, spec: ServeSpec, slot: ModelSlot, interval_s: float):
        self.spec, self.slot, self.interval_s = spec, slot, interval_s
        self.swaps = 0
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneops-alias-follower", daemon=True)

    def start(self) -> None:
        if self.spec.alias is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def check_once(self) -> bool:
        """Look at the alias once; load and swap when it moved. Returns whether a new version was swapped in."""
        from mlflow.exceptions import MlflowException

        try:
            target = resolve(self.spec)
        except (TuneopsError, MlflowException, OSError) as exc:
            log.error("cannot read alias %s of %s (%s); still serving v%s", self.spec.alias, self.spec.model_name,
                      exc, self.slot.current.version)
            return False
        if target is None or target == self.slot.current.version or target == self._failed:
            return False
        log.info("%s@%s moved to v%s: loading it beside v%s", self.spec.model_name, self.spec.alias, target,
                 self.slot.current.version)
        try:
            loaded = load(self.spec, target)
        except Exception:  # noqa: BLE001 - any failure of a new version must leave the serving one in place
            log.exception("loading %s v%s failed; still serving v%s", self.spec.model_name, target,
                          self.slot.current.version)
            self._failed = target
            return False
        old = self.slot.swap(loaded)
        self._failed = None
        self.swaps += 1
        log.info("now serving %s v%s (was v%s)", self.spec.model_name, loaded.version, old.version)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_once()


# --------------------------------------------------------------------------------------------- requests


class BadRequest(Exception):
    """A request the server refuses: the HTTP status and a message that names the problem and the fix."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def body_limit(serving: ServingConfig) -> int:
    """Largest request body accepted, in bytes: max_rows texts of max_text_chars, each char JSON-escaped (6 bytes),
    plus room for the envelope."""
    return serving.max_rows * (serving.max_text_chars * 6 + 256) + 65_536


def _json_frame(payload: Any, column: str) -> tuple[list[Any], list[str]]:
    """The values of ``column`` in an MLflow JSON payload, and the columns it has (for the error message)."""
    if not isinstance(payload, dict):
        raise BadRequest(400, f"the JSON body must be an object with one of the keys {', '.join(REQUEST_KEYS)} "
                         f"(got a JSON {type(payload).__name__}); e.g. {{\"dataframe_records\": [{{\"{column}\": "
                         "\"...\"}]}")
    keys = [k for k in REQUEST_KEYS if k in payload]
    unknown = sorted(set(payload) - set(REQUEST_KEYS) - {"params"})
    if len(keys) != 1 or unknown:
        found = ", ".join(sorted(payload)) or "none"
        raise BadRequest(400, f"the JSON body needs exactly one of the keys {', '.join(REQUEST_KEYS)} (found: "
                         f"{found}); e.g. {{\"dataframe_split\": {{\"columns\": [\"{column}\"], \"data\": "
                         "[[\"...\"]]}}")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or \
                not isinstance(data.get("data"), list):
            raise BadRequest(400, "dataframe_split must be an object with a 'columns' list and a 'data' list of rows "
                             f"(e.g. {{\"columns\": [\"{column}\"], \"data\": [[\"...\"]]}})")
        columns = data["columns"]
        if column not in columns:
            return [], [str(c) for c in columns]
        at = columns.index(column)
        values = []
        for number, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise BadRequest(400, f"dataframe_split row {number} is not a list of {len(columns)} values (one per "
                                 "column)")
            values.append(row[at])
        return values, [str(c) for c in columns]
    if isinstance(data, dict):  # columnar: {"text": [...]} (inputs / instances as MLflow takes them)
        if column not in data:
            return [], [str(c) for c in data]
        values = data[column]
        return (values if isinstance(values, list) else [values]), [str(c) for c in data]
    if isinstance(data, str) and key in ("inputs", "instances"):
        return [data], [column]
    if not isinstance(data, list):
        raise BadRequest(400, f"{key} must be a list of rows (got a JSON {type(data).__name__})")
    if key in ("inputs", "instances") and all(not isinstance(row, dict) for row in data):
        return data, [column]  # a plain list of texts
    values, columns = [], []
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise BadRequest(400, f"{key} row {number} is not an object of column values (got a JSON "
                             f"{type(row).__name__}); send e.g. {{\"{column}\": \"...\"}} per row")
        if column not in row:
            return [], sorted(row)
        columns = columns or sorted(row)
        values.append(row[column])
    return values, columns or [column]


def parse_texts(body: bytes, content_type: str | None, column: str, serving: ServingConfig) -> list[str]:
    """The texts of an ``/invocations`` body, or a :class:`BadRequest` naming what is wrong with it.

    JSON (``application/json``, the default when no type is given) in any of MLflow's four layouts, or CSV
    (``text/csv``) with a header row. Every value must be a string (a causal LM's conversation goes as JSON
    text, as the pyfunc takes it) of at most ``max_text_chars`` characters, and there must be 1 to
    ``max_rows`` of them.
    """
    mime = (content_type or "application/json").split(";")[0].strip().lower()
    if mime == "text/csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
            raise BadRequest(400, f"the CSV body cannot be read ({exc}); send a header row naming '{column}'") \
                from None
        columns = [str(c) for c in frame.columns]
        values: list[Any] = frame[column].tolist() if column in frame.columns else []
    elif mime == "application/json" or mime.endswith("+json"):
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"the request body is not valid JSON ({exc}); send e.g. "
                             f"{{\"dataframe_records\": [{{\"{column}\": \"...\"}}]}}") from None
        values, columns = _json_frame(payload, column)
    else:
        raise BadRequest(415, f"content type '{content_type}' is not supported; send application/json (MLflow's "
                         "dataframe_records / dataframe_split / inputs / instances) or text/csv",
                         error_code="UNSUPPORTED_MEDIA_TYPE")
    if column not in columns:
        raise BadRequest(400, f"the request has no '{column}' column (columns: {columns}); this model reads its "
                         f"input from '{column}'")
    if not values:
        raise BadRequest(400, "the request holds no rows (an empty batch); send at least one "
                         f"'{column}' value")
    if len(values) > serving.max_rows:
        raise BadRequest(413, f"the request holds {len(values)} rows, more than serving.max_rows = "
                         f"{serving.max_rows}; split it into smaller requests (or use score_batch for bulk "
                         "scoring)", error_code="TOO_MANY_ROWS")
    for number, value in enumerate(values):
        if not isinstance(value, str):
            shown = "null" if value is None else type(value).__name__
            raise BadRequest(400, f"row {number}: '{column}' must be a string, got {shown} ({json.dumps(value)[:80]})")
        if len(value) > serving.max_text_chars:
            raise BadRequest(413, f"row {number}: '{column}' is {len(value)} characters long, more than "
                             f"serving.max_text_chars = {serving.max_text_chars}", error_code="TEXT_TOO_LONG")
    return values


# --------------------------------------------------------------------------------------------- micro-batching


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


@dataclass(frozen=True)
class Answer:
    """What one request gets back: the pyfunc's output rows, their prediction-log ids, the version that made them."""

    predictions: list[dict[str, Any]]
    request_ids: list[str]
    version: str


@dataclass
class Stats:
    """What this worker has done since it started (reported by /metadata)."""

    requests: int = 0
    rows: int = 0
    model_calls: int = 0
    largest_call_rows: int = 0
    bad_requests: int = 0
    errors: int = 0
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class MicroBatcher:
    """Coalesce concurrent requests into one model call of at most ``max_batch_size`` rows.

    A call takes every queued request that fits and, when it still has room, waits once up to ``max_wait_ms`` for
    more (the clients the last call just answered are typically sending again); requests that arrive while the
    model is busy are queued and form the next call. The model runs on one thread of its own
    (one call at a time, using every CPU thread torch has), so the event loop keeps accepting requests. All rows
    of one call are scored by the one model taken from the slot when the call starts, stamped once (score_batch's
    timestamp and per-row request ids, the time of the call) and handed to the prediction log in one piece; each
    request gets its slice.
    """

    def __init__(self, slot: ModelSlot, max_batch_size: int, max_wait_ms: float, stats: Stats,
                 prediction_log: OnlinePredictionLog | None = None):
        self.slot, self.max_batch_size, self.max_wait_s = slot, max_batch_size, max_wait_ms / 1000
        self.stats, self.prediction_log = stats, prediction_log
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: _Pending | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneops-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tuneops-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def score(self, texts: list[str]) -> Answer:
        """Score these texts in the next model call that has room for them."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _next_batch(self) -> list[_Pending]:
        first = self._held or await self._queue.get()
        self._held = None
        batch, rows = [first], len(first.texts)
        rows = self._drain(batch, rows)
        if self.max_wait_s > 0 and rows < self.max_batch_size and self._held is None:
            # Room left: wait once for company. Under a closed loop the clients answered by the last call are
            # sending again right now; without this they would form a call of their own after this one.
            await asyncio.sleep(self.max_wait_s)
            self._drain(batch, rows)
        return batch

    def _drain(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests into ``batch`` while they fit; the first that does not is held for the next call."""
        while rows < self.max_batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if rows + len(item.texts) > self.max_batch_size:
                self._held = item  # first in the next call
                break
            batch.append(item)
            rows += len(item.texts)
        return rows

    def _call_model(self, loaded: LoadedModel, texts: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """One model call on the model thread: score, stamp, log; the output rows and request ids, in order."""
        import pandas as pd

        from tuneops.serving.scoring import score_frame, stamp_predictions

        scored = score_frame(loaded.model, pd.DataFrame({loaded.column: texts}), loaded.column, loaded.version)
        stamped = stamp_predictions(scored, datetime.now(UTC))
        if self.prediction_log is not None:
            self.prediction_log.append(stamped)
        outputs = [c for c in scored.columns if c not in (loaded.column, "model_version")]
        return scored[outputs].to_dict(orient="records"), stamped["request_id"].tolist()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._next_batch() if not p.future.done()]  # a client that gave up
            if not batch:
                continue
            loaded = self.slot.current  # this call's model, whatever is swapped in meanwhile
            texts = [t for p in batch for t in p.texts]
            try:
                records, ids = await loop.run_in_executor(self._executor, self._call_model, loaded, texts)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which answers 500 and logs it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.stats.model_calls += 1
            self.stats.largest_call_rows = max(self.stats.largest_call_rows, len(texts))
            start = 0
            for p in batch:
                end = start + len(p.texts)
                if not p.future.done():
                    p.future.set_result(Answer(records[start:end], ids[start:end], loaded.version))
                start = end


# --------------------------------------------------------------------------------------------- prediction log


class OnlinePredictionLog:
    """Online predictions, stamped per model call like score_batch's rows, appended to the prediction log.

    Rows are buffered and written every ``flush_s`` seconds (and at shutdown) as one new file per write under
    ``<output>/date=YYYY-MM-DD/``, with score_batch's writer pieces, so monitoring reads online and batch traffic
    alike. A write that fails is logged and retried at the next flush; at most ``max_buffered_rows`` wait, the
    oldest are dropped (and counted) beyond that, so a dead log store never stops the server answering.
    """

    def __init__(self, output: str, flush_s: float, fmt: str = "jsonl", max_buffered_rows: int = 200_000):
        from tuneops.serving.scoring import log_file_uri

        log_file_uri(output, datetime.now(UTC), fmt)  # refuses a file path or a bad format before serving starts
        self.output, self.flush_s, self.fmt, self.max_buffered_rows = output, flush_s, fmt, max_buffered_rows
        self.written_rows = self.dropped_rows = 0
        self._frames: list[pd.DataFrame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneops-prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, stamped: pd.DataFrame) -> None:
        with self._lock:
            self._frames.append(stamped)

    def flush(self) -> None:
        import pandas as pd

        from tuneops.data.storage import write_bytes
        from tuneops.serving.scoring import encode_table, log_file_uri

        with self._lock:
            frames, self._frames = self._frames, []
        if not frames:
            return
        rows = pd.concat(frames, ignore_index=True)
        for day, part in rows.groupby(rows["timestamp"].str.slice(0, 10), sort=True):
            first = datetime.fromisoformat(part["timestamp"].iloc[0])
            uri = log_file_uri(self.output, first, self.fmt)
            try:
                write_bytes(encode_table(part.reset_index(drop=True), self.fmt, name=f"output {uri}"), uri)
            except Exception:  # noqa: BLE001 - the log store being down must not stop serving; retried next flush
                log.exception("writing %d online predictions (%s) to %s failed; retrying at the next flush",
                              len(part), day, uri)
                self._requeue(part)
                continue
            self.written_rows += len(part)

    def _requeue(self, part: pd.DataFrame) -> None:
        with self._lock:
            self._frames.insert(0, part)
            waiting = sum(len(f) for f in self._frames)
            while waiting > self.max_buffered_rows and len(self._frames) > 1:
                dropped = self._frames.pop(0)
                waiting -= len(dropped)
                self.dropped_rows += len(dropped)
                log.error("dropped %d online predictions: the prediction log at %s stays unwritable",
                          len(dropped), self.output)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()


# --------------------------------------------------------------------------------------------- the app


def _error(status: int, error_code: str, message: str, version: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    headers = {VERSION_HEADER: version} if version else None
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status, headers=headers)


def create_app(spec: ServeSpec, loaded: LoadedModel | None = None) -> Any:
    """The ASGI app (Starlette) for one server process. The model is loaded at start-up (uvicorn accepts no
    connection before that), unless ``loaded`` is given."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    serving = spec.settings()
    state: dict[str, Any] = {}
    stats = Stats()
    max_body = body_limit(serving)

    def current_version() -> str | None:
        slot = state.get("slot")
        return slot.current.version if slot is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202 - Starlette's lifespan protocol
        model = loaded or await asyncio.get_running_loop().run_in_executor(None, load, spec, resolve(spec))
        slot = ModelSlot(model)
        follower = AliasFollower(spec, slot, serving.poll_interval_s)
        prediction_log = OnlinePredictionLog(spec.log_output, serving.log_flush_s) if spec.log_output else None
        batcher = MicroBatcher(slot, serving.max_batch_size, serving.max_wait_ms, stats, prediction_log)
        state.update(slot=slot, follower=follower, batcher=batcher, log=prediction_log)
        batcher.start()
        follower.start()
        if prediction_log is not None:
            prediction_log.start()
        log.info("serving %s v%s (pid %d)", spec.describe(), model.version, os.getpid())
        try:
            yield
        finally:
            follower.stop()
            await batcher.stop()
            if prediction_log is not None:
                prediction_log.close()

    async def invocations(request: Request) -> Response:
        slot: ModelSlot = state["slot"]
        try:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_body:
                raise BadRequest(413, f"the request body is {int(length)} bytes, more than this server accepts "
                                 f"({max_body}: serving.max_rows x serving.max_text_chars); split it",
                                 error_code="BODY_TOO_LARGE")
            body = await request.body()
            if len(body) > max_body:
                raise BadRequest(413, f"the request body is {len(body)} bytes, more than this server accepts "
                                 f"({max_body})", error_code="BODY_TOO_LARGE")
            texts = parse_texts(body, request.headers.get("content-type"), slot.current.column, serving)
        except BadRequest as bad:
            stats.bad_requests += 1
            return _error(bad.status, bad.error_code, bad.message, slot.current.version)
        answer: Answer = await state["batcher"].score(texts)
        stats.requests += 1
        stats.rows += len(texts)
        return JSONResponse({"predictions": answer.predictions, "model_version": answer.version,
                             "request_ids": answer.request_ids}, headers={VERSION_HEADER: answer.version})

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json", headers={VERSION_HEADER: current_version() or ""})

    async def version(request: Request) -> Response:
        import mlflow

        return PlainTextResponse(mlflow.__version__)

    async def metadata(request: Request) -> Response:
        slot: ModelSlot = state["slot"]
        meta = dict(slot.current.metadata)
        meta["alias"] = spec.alias
        meta["following"] = spec.alias is not None
        if spec.alias is not None:
            meta["alias_points_to"] = meta["model_version"] if spec.alias in meta.get("aliases", []) else None
        meta["serving"] = {k: spec.serving[k] for k in ("max_batch_size", "max_wait_ms", "max_rows", "max_text_chars",
                                                        "poll_interval_s", "runtime")}
        meta["prediction_log"] = spec.log_output
        meta["worker"] = {"pid": os.getpid(), **asdict(stats), "swaps": state["follower"].swaps}
        return JSONResponse(meta, headers={VERSION_HEADER: slot.current.version})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = (f"no route {request.method} {request.url.path}; this server answers POST /invocations and "
                       "GET /ping, /health, /version, /metadata")
            return _error(404, "NOT_FOUND", message, current_version())
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return _error(405, "METHOD_NOT_ALLOWED", f"{request.url.path} does not take {request.method}; use "
                          f"{allowed}", current_version())
        return _error(exc.status_code, "HTTP_ERROR", str(exc.detail), current_version())

    async def internal_error(request: Request, exc: Exception) -> Response:
        stats.errors += 1
        log.error("internal error answering %s %s", request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return _error(500, "INTERNAL_ERROR", f"the server failed to answer ({type(exc).__name__}: {exc}); the "
                      "server log has the traceback", current_version())

    routes = [Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping, methods=["GET"]),
              Route("/health", ping, methods=["GET"]), Route("/version", version, methods=["GET"]),
              Route("/metadata", metadata, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})


def app_from_environment() -> Any:
    """uvicorn's factory in each worker process (``--workers N``): the spec comes from ``TUNEOPS_SERVE_SPEC``."""
    from tuneops import settings

    settings.configure_environment()
    spec = ServeSpec.from_json(os.environ[SPEC_ENV])
    share_cpu_threads(spec.settings().workers)
    return create_app(spec)


def share_cpu_threads(workers: int) -> None:
    """Give each of N worker processes its share of the CPU cores, so N models do not fight over every core."""
    if workers <= 1:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def serve(spec: ServeSpec) -> None:
    """Run the server in the foreground until interrupted (SIGINT / SIGTERM shut it down gracefully).

    One worker: the model is loaded here first, so a model that cannot load fails the command with its message
    before any port is bound. Several: the version is resolved here (no champion fails at once), then uvicorn
    starts N processes that each load the model and follow the alias on their own.
    """
    import copy

    import uvicorn

    from tuneops import console

    serving = spec.settings()
    resolved = resolve(spec)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # uvicorn's, plus the server's own messages
    log_config["loggers"]["tuneops"] = {"handlers": ["default"], "level": console.level(strict=False),
                                        "propagate": False}
    uvicorn_log = {"log_level": "info", "log_config": log_config, "timeout_graceful_shutdown": 30}
    if serving.workers == 1:
        loaded = load(spec, resolved)
        uvicorn.run(create_app(spec, loaded), host=serving.host, port=serving.port, **uvicorn_log)
        return
    os.environ[SPEC_ENV] = spec.to_json()
    uvicorn.run("tuneops.serving.server:app_from_environment", factory=True, host=serving.host, port=serving.port,
                workers=serving.workers, **uvicorn_log)


def mlflow_serve_command(spec: ServeSpec) -> tuple[list[str], dict[str, str]]:
    """The `mlflow models serve` command line that serves the same model from the same store, and the environment
    it needs outside tuneops: ``MLFLOW_TRACKING_URI`` (tuneops' store) and the venv's ``bin/`` on ``PATH`` (MLflow
    starts its scoring server as ``uvicorn`` from PATH). Pinned to the version resolved now: MLflow's server loads
    once and never follows an alias."""
    import sys
    from pathlib import Path

    serving = spec.settings()
    uri = spec.model_uri or f"models:/{spec.model_name}/{resolve(spec)}"
    bin_dir = str(Path(sys.executable).parent)
    argv = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
            "-h", serving.host, "-p", str(serving.port), "-w", str(serving.workers)]
    env = {"MLFLOW_TRACKING_URI": _tracking_uri(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return argv, env


def wait_until_ready(url: str, timeout_s: float, alive: Any = None) -> None:
    """Poll ``url``/ping until it answers 200 (``alive()`` returning False stops early): for tests and benchmarks."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server behind {url} exited before it answered /ping")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url}/ping did not answer within {timeout_s:.0f} s")
