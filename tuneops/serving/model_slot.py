"""The model a server process serves: one loaded version (:class:`LoadedModel`) in a :class:`ModelSlot`, and the
:class:`AliasFollower` that swaps the next one in when the followed alias moves.

A new version is loaded and warmed up beside the serving one, then swapped in by one assignment: a model call that
already started finishes on the model it started with, and every answer names the version that made it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tuneops.errors import ConfigError, RegistryError, TuneopsError
from tuneops.serving.spec import ServeSpec

log = logging.getLogger("tuneops.serving.server")  # the server's one log, whichever module writes


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
    """What the registry records for a version: its run, aliases, test metrics, data fingerprint, gate verdict, and
    every tag of the version (as it was when the version was loaded)."""
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
            "registered_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
            "tags": tags}


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
            model, runtime = scoring.load_verified(cfg, version, share_base=spec.share_base)
        else:
            model = scoring.load_model(spec.model_name, version, share_base=spec.share_base)
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
                            f"{tracking_uri()}; train one (`tuneops train CONFIG`), point MLFLOW_TRACKING_URI / "
                            "TUNEOPS_HOME at the store that holds it, or pin a version with --version N")
    return found


def tracking_uri() -> str:
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
    serving (a version that failed is not retried until the alias moves again; :attr:`load_failure` says what
    failed until a version is swapped in): the server never stops answering because of what happens in the
    registry. Each model a process serves has its own follower, so one model's failure leaves the others alone.
    """

    def __init__(self, spec: ServeSpec, slot: ModelSlot, interval_s: float):
        self.spec, self.slot, self.interval_s = spec, slot, interval_s
        self.swaps = 0
        self.alias_points_to: str | None = None
        """Where the alias pointed at the last look (None before the first)."""
        self.load_failure: dict[str, str] | None = None
        """The version the alias points to that failed to load (``version``, ``error``, ``at``), else None."""
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneops-alias-follower", daemon=True)

    def start(self) -> None:
        if self.spec.alias is not None:
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop following; ``wait``: until a load under way has finished (at most 30 s)."""
        self._stop.set()
        if wait and self._thread.is_alive():
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
        self.alias_points_to = target
        if target is None or target == self.slot.current.version or target == self._failed:
            return False
        log.info("%s@%s moved to v%s: loading it beside v%s", self.spec.model_name, self.spec.alias, target,
                 self.slot.current.version)
        try:
            loaded = load(self.spec, target)
        except Exception as exc:  # noqa: BLE001 - any failure of a new version must leave the serving one in place
            log.exception("loading %s v%s failed; still serving v%s", self.spec.model_name, target,
                          self.slot.current.version)
            self._failed = target
            self.load_failure = {"version": target, "error": f"{type(exc).__name__}: {exc}",
                                 "at": datetime.now(UTC).isoformat(timespec="seconds")}
            return False
        old = self.slot.swap(loaded)
        self._failed, self.load_failure = None, None
        self.swaps += 1
        log.info("now serving %s v%s (was v%s)", self.spec.model_name, loaded.version, old.version)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_once()

