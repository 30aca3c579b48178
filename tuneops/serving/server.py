"""`tuneops serve`: registry champions (or pinned versions) over HTTP, with MLflow's scoring contract.

One server process serves one model or several (one :class:`ServedModel` each, named by its registered name), and
answers:

- ``POST /models/{name}/invocations`` (and ``POST /invocations`` when exactly one model is served):
  ``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances`` (JSON), or a CSV body, as
  `mlflow models serve` takes them; the answer is ``{"predictions": [...], "model_version": "N", "model_name":
  NAME, "request_ids": [...]}`` (the pyfunc's output rows, as MLflow returns them) and the header
  ``X-Tuneops-Model-Version``; an unknown name is a 404 listing the served ones, and ``/invocations`` on a server
  of several models a 404 naming their routes;
- ``GET /ping``, ``/health`` (200 once every model is loaded), ``/version`` (the MLflow version, like MLflow's
  server), ``/metadata`` (each model's name, version, alias, test metrics, data fingerprint, a failed load, serving
  counters; one model's fields at the top level too when only one is served), ``/models/{name}/metadata``.

Each model has its own micro-batcher (:class:`MicroBatcher`: concurrent requests coalesced into one model call of
up to ``serving.max_batch_size`` rows, waiting at most ``serving.max_wait_ms`` for company) and its own
background thread (:class:`AliasFollower`) that looks every ``serving.poll_interval_s`` at where its followed
alias (``champion``) points; when it moves, the new version is loaded and warmed up beside the old one, then
swapped in by one assignment: a model call that already started finishes on the model it started with, and every
answer names the version that made it; a version that fails to load leaves the old one serving (and /metadata
says so). Answered rows are stamped like score_batch's and appended to the model's prediction log
(:class:`OnlinePredictionLog`), so monitoring sees online traffic. A request that is wrong gets a 4xx JSON body
naming the problem (:class:`BadRequest`); an unexpected failure a 500 JSON body, and its traceback in the log.

The server never branches on the task family: the input column is the one the registered signature names (a
classifier's ``text``, a causal LM's ``prompt``), the output columns are whatever the family's pyfunc returns.

This module is the HTTP app, its routes and the launch (one process, or uvicorn's workers); the pieces it wires
together live beside it: :mod:`tuneops.serving.spec` (what to serve), :mod:`tuneops.serving.served_model` (one
served model's pieces), :mod:`tuneops.serving.model_slot` (loading a version, the slot, the alias follower),
:mod:`tuneops.serving.request_body` (parsing a request), :mod:`tuneops.serving.batching` (micro-batching) and
:mod:`tuneops.serving.online_log` (the prediction log). They all write to the one ``tuneops.serving.server`` log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from tuneops.serving.batching import Answer
from tuneops.serving.model_slot import LoadedModel, load, resolve, tracking_uri
from tuneops.serving.request_body import BadRequest
from tuneops.serving.served_model import ServedModel
from tuneops.serving.spec import ServeSpec, specs_from_json, specs_to_json

log = logging.getLogger("tuneops.serving.server")

SPEC_ENV = "TUNEOPS_SERVE_SPEC"
"""How the CLI hands the serve settings to uvicorn's worker processes (JSON of the :class:`ServeSpec` list)."""
VERSION_HEADER = "X-Tuneops-Model-Version"
PROCESS_ROUTES = "GET /ping, /health, /version, /metadata"


def _error(status: int, error_code: str, message: str, version: str | None = None, **extra: Any) -> Any:
    from starlette.responses import JSONResponse

    headers = {VERSION_HEADER: version} if version else None
    return JSONResponse({"error_code": error_code, "message": message, **extra}, status_code=status, headers=headers)


def _as_list(value: Any, kind: type) -> list[Any]:
    return [value] if isinstance(value, kind) else list(value)


def create_app(spec: ServeSpec | Sequence[ServeSpec],
               loaded: LoadedModel | Sequence[LoadedModel] | None = None) -> Any:
    """The ASGI app (Starlette) for one server process serving one model or several (one spec each). The models are
    loaded at start-up (uvicorn accepts no connection before that), unless ``loaded`` gives them (in spec order)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    models = [ServedModel(s) for s in _as_list(spec, ServeSpec)]
    preloaded = _as_list(loaded, LoadedModel) if loaded is not None else None
    if preloaded is not None and len(preloaded) != len(models):
        raise ValueError(f"{len(preloaded)} loaded models for {len(models)} specs")
    by_name = {m.name: m for m in models if m.name is not None}
    only = models[0] if len(models) == 1 else None
    names = list(by_name)

    def versions_header() -> str:
        """The header of an answer that is not one model's: its version, or NAME=VERSION of each model."""
        if only is not None:
            return only.version or ""
        return ", ".join(f"{m.name}={m.version}" for m in models if m.version is not None)

    def served_routes() -> str:
        return "; ".join(f"POST {m.spec.route}" for m in models)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202 - Starlette's lifespan protocol
        loop = asyncio.get_running_loop()
        started: list[ServedModel] = []
        try:
            for i, m in enumerate(models):
                model = preloaded[i] if preloaded is not None else await loop.run_in_executor(
                    None, load, m.spec, resolve(m.spec))
                m.start(model)
                started.append(m)
            yield
        finally:
            for m in started:  # every follower told first: none waits for another's to finish
                m.stopping()
            for m in started:
                await m.stop()

    async def answer_with(m: ServedModel, request: Request) -> Response:
        try:
            m.check_length(request.headers.get("content-length"))
            texts = m.texts(await request.body(), request.headers.get("content-type"))
        except BadRequest as bad:
            return _error(bad.status, bad.error_code, bad.message, m.version)
        answer: Answer = await m.score(texts)
        return JSONResponse({"predictions": answer.predictions, "model_version": answer.version,
                             "model_name": m.name, "request_ids": answer.request_ids},
                            headers={VERSION_HEADER: answer.version})

    def unknown_model(name: str) -> Response:
        served = ", ".join(names) or "none by name (a plain model URI: POST /invocations)"
        return _error(404, "MODEL_NOT_FOUND", f"no model named '{name}' is served here; served: {served} ("
                      f"{served_routes()})", versions_header(), served_models=names)

    async def invocations(request: Request) -> Response:
        if only is not None:
            return await answer_with(only, request)
        return _error(404, "MODEL_NOT_NAMED", f"this server serves {len(models)} models ({', '.join(names)}): "
                      f"name one in the path, {served_routes()}", versions_header(), served_models=names)

    async def model_invocations(request: Request) -> Response:
        name = request.path_params["name"]
        return await answer_with(by_name[name], request) if name in by_name else unknown_model(name)

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json", headers={VERSION_HEADER: versions_header()})

    async def version(request: Request) -> Response:
        import mlflow

        return PlainTextResponse(mlflow.__version__)

    async def metadata(request: Request) -> Response:
        entries = [m.metadata() for m in models]
        if only is not None:  # one model: its fields at the top level, as before several could be served
            return JSONResponse({**entries[0], "models": entries}, headers={VERSION_HEADER: versions_header()})
        return JSONResponse({"models": entries, "served_models": names, "worker": {"pid": os.getpid()}},
                            headers={VERSION_HEADER: versions_header()})

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in by_name:
            return unknown_model(name)
        m = by_name[name]
        return JSONResponse(m.metadata(), headers={VERSION_HEADER: m.version or ""})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            if only is not None and only.name is None:
                answers = f"POST /invocations and {PROCESS_ROUTES}"
            elif only is not None:
                answers = (f"POST /invocations (also {only.spec.route}) and {PROCESS_ROUTES}, "
                           f"/models/{only.name}/metadata")
            else:
                answers = f"{served_routes()} and {PROCESS_ROUTES}, /models/NAME/metadata"
            message = f"no route {request.method} {request.url.path}; this server answers {answers}"
            return _error(404, "NOT_FOUND", message, versions_header())
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return _error(405, "METHOD_NOT_ALLOWED", f"{request.url.path} does not take {request.method}; use "
                          f"{allowed}", versions_header())
        return _error(exc.status_code, "HTTP_ERROR", str(exc.detail), versions_header())

    async def internal_error(request: Request, exc: Exception) -> Response:
        name = request.path_params.get("name")
        served = by_name.get(name) if name else only
        if served is not None:
            served.stats.errors += 1
        log.error("internal error answering %s %s", request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return _error(500, "INTERNAL_ERROR", f"the server failed to answer ({type(exc).__name__}: {exc}); the "
                      "server log has the traceback", served.version if served is not None else versions_header())

    routes = [Route("/invocations", invocations, methods=["POST"]),
              Route("/models/{name:path}/invocations", model_invocations, methods=["POST"]),
              Route("/models/{name:path}/metadata", model_metadata, methods=["GET"]),
              Route("/ping", ping, methods=["GET"]), Route("/health", ping, methods=["GET"]),
              Route("/version", version, methods=["GET"]), Route("/metadata", metadata, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})


def app_from_environment() -> Any:
    """uvicorn's factory in each worker process (``--workers N``): the spec comes from ``TUNEOPS_SERVE_SPEC``."""
    from tuneops import settings

    settings.configure_environment()
    specs = specs_from_json(os.environ[SPEC_ENV])
    share_cpu_threads(specs[0].settings().workers)
    return create_app(specs)


def share_cpu_threads(workers: int) -> None:
    """Give each of N worker processes its share of the CPU cores, so N models do not fight over every core."""
    if workers <= 1:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def serve(spec: ServeSpec | Sequence[ServeSpec]) -> None:
    """Run the server in the foreground until interrupted (SIGINT / SIGTERM shut it down gracefully).

    One worker: the models are loaded here first, one after the other, so a model that cannot load fails the
    command with its message before any port is bound. Several: the versions are resolved here (no champion fails
    at once), then uvicorn starts N processes that each load every model and follow the aliases on their own.
    The per-process settings (host, port, workers) are the same in every spec (:func:`tuneops.serving.spec.
    build_specs`).
    """
    import copy

    import uvicorn

    from tuneops import console

    specs = _as_list(spec, ServeSpec)
    serving = specs[0].settings()
    resolved = [resolve(s) for s in specs]
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # uvicorn's, plus the server's own messages
    log_config["loggers"]["tuneops"] = {"handlers": ["default"], "level": console.level(strict=False),
                                        "propagate": False}
    uvicorn_log = {"log_level": "info", "log_config": log_config, "timeout_graceful_shutdown": 30}
    if serving.workers == 1:
        loaded = [load(s, version) for s, version in zip(specs, resolved, strict=True)]
        uvicorn.run(create_app(specs, loaded), host=serving.host, port=serving.port, **uvicorn_log)
        return
    os.environ[SPEC_ENV] = specs_to_json(specs)
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
