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

This module is the HTTP app, its routes and the launch (one process, or uvicorn's workers); the pieces it wires
together live beside it: :mod:`tuneops.serving.spec` (what to serve), :mod:`tuneops.serving.model_slot` (loading a
version, the slot, the alias follower), :mod:`tuneops.serving.request_body` (parsing a request),
:mod:`tuneops.serving.batching` (micro-batching) and :mod:`tuneops.serving.online_log` (the prediction log). They
all write to the one ``tuneops.serving.server`` log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from tuneops.serving.batching import Answer, MicroBatcher, Stats
from tuneops.serving.model_slot import AliasFollower, LoadedModel, ModelSlot, load, resolve, tracking_uri
from tuneops.serving.online_log import OnlinePredictionLog
from tuneops.serving.request_body import BadRequest, body_limit, parse_texts
from tuneops.serving.spec import ServeSpec

log = logging.getLogger("tuneops.serving.server")

SPEC_ENV = "TUNEOPS_SERVE_SPEC"
"""How the CLI hands the serve settings to uvicorn's worker processes (JSON of a :class:`ServeSpec`)."""
VERSION_HEADER = "X-Tuneops-Model-Version"


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
    env = {"MLFLOW_TRACKING_URI": tracking_uri(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
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
