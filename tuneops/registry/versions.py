"""The MLflow model registry as the source of truth: registered versions with their provenance, aliases, audit tags.

:func:`log_and_register` writes a version (pyfunc, model card, provenance tags in one call);
:func:`promote` and :func:`rollback` move the ``champion`` / ``previous`` aliases and record why.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.errors import RegistryError
from tuneops.registry.tracking import client

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.evaluation.gate import GateDecision
    from tuneops.training.trainer import TrainResult

SERVING_PACKAGES = ("torch", "transformers", "peft", "pandas", "mlflow")
"""What a registered model needs to load and predict; their pins come from the project's own requirements."""


def serving_requirements() -> list[str]:
    """The pip requirements of a registered model: the pins tuneops itself declares for the serving packages.

    One source of truth (pyproject.toml, as installed): a pin changed there changes every new version's.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("tuneops") or []
    except PackageNotFoundError:  # running from a source tree that was never installed
        raise RegistryError("tuneops is not installed, so a registered model's pip requirements are unknown; "
                            "install it (`make install` or `pip install -e .`)") from None
    found = {}
    for requirement in declared:
        if ";" in requirement:  # extras (dev) and markers: not what serving needs
            continue
        name = re.split(r"[\s<>=!~\[]", requirement, maxsplit=1)[0].lower()
        if name in SERVING_PACKAGES:
            found[name] = requirement.replace(" ", "")
    missing = [p for p in SERVING_PACKAGES if p not in found]
    if missing:
        raise RegistryError(f"the installed tuneops declares no requirement for {', '.join(missing)}; reinstall it "
                            "(`make install`)")
    return [found[p] for p in SERVING_PACKAGES]


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def version_for_run(name: str, run_id: str) -> str | None:
    """The version already registered from a run (so a retried registration reuses it)."""
    versions = client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(versions[0].version) if versions else None


@dataclass(frozen=True)
class Promotion:
    """What a promotion left in the registry: ``changed`` is False when ``version`` already was the champion."""

    champion: str
    previous: str | None
    changed: bool


PENDING, COMPLETE = "pending", "complete"
REGISTRATION_TAG = "tuneops.registration"
"""A version is written ``pending`` and marked ``complete`` once its description and model card are in; versions
from before this tag existed carry none and count as complete."""

LOCK_WAIT_S = 60.0
LOCK_STALE_S = 120.0


def _lock_name(name: str) -> str:
    return f"{name}.tuneops-alias-lock"


@contextlib.contextmanager
def alias_lock(name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the alias lock of registered model ``name`` for the length of the block.

    MLflow has no transactions, and setting an alias is last-writer-wins, so a promotion that reads 'champion',
    then moves 'previous' and 'champion', is a read-modify-write that two processes can interleave (both read v1,
    both set previous=v1, one champion is lost). The one atomic test-and-set MLflow's REST API offers is creating
    an object under a unique name: the backend's unique constraint makes exactly one of two concurrent
    ``create_registered_model`` calls succeed (the other gets RESOURCE_ALREADY_EXISTS). So the lock is a
    registered model named ``<name>.tuneops-alias-lock``, tagged with its holder and the time it was taken, and
    deleted on release; every alias move of ``name`` (promote, rollback, registration's auto-promotion) happens
    inside it. A holder that died leaves its lock behind: a lock older than LOCK_STALE_S (a promotion takes well
    under a second) is broken by the next promoter. Breaking is the one unprotected step (two waiters could break
    the same stale lock at the same instant); it only happens after a crash in the middle of a promotion.
    """
    import socket

    from mlflow.exceptions import MlflowException

    from tuneops.faults import note

    c, lock = client(), _lock_name(name)
    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            c.create_registered_model(lock, tags={"tuneops.lock.holder": token,
                                                  "tuneops.lock.acquired_at": f"{time.time():.3f}"},
                                      description=f"Lock held while the aliases of {name} move; not a model.")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        note("alias_lock:waiting")
        held = _lock_holder(lock)
        if held is not None and time.time() - held[1] > LOCK_STALE_S:
            with contextlib.suppress(MlflowException):
                c.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            who = f"{held[0]} since {datetime.fromtimestamp(held[1], UTC).isoformat(timespec='seconds')}" \
                if held else "another process"
            raise RegistryError(f"the aliases of {name} are being moved by {who}; retry in a minute, or if no "
                                f"promotion is running, delete the registered model '{lock}' in the MLflow UI")
        time.sleep(0.2)
    try:
        yield
    finally:
        held = _lock_holder(lock)
        if held is not None and held[0] == token:
            with contextlib.suppress(MlflowException):
                c.delete_registered_model(lock)


def _lock_holder(lock: str) -> tuple[str, float] | None:
    from mlflow.exceptions import MlflowException

    try:
        tags = client().get_registered_model(lock).tags
    except MlflowException:
        return None
    try:
        return tags["tuneops.lock.holder"], float(tags["tuneops.lock.acquired_at"])
    except (KeyError, ValueError):
        return "an unknown holder", 0.0


def promote(name: str, version: str, reason: str, *, gate_must_pass: bool = True) -> Promotion:
    """Point 'champion' at ``version``; the old champion becomes 'previous'. Says so when nothing changes.

    The read of the old champion and both alias moves happen under :func:`alias_lock`, so racing promotions
    serialise: each sees the champion the other left, and 'previous' always names the champion it replaced.
    """
    c = client()
    from mlflow.exceptions import MlflowException

    try:
        mv = c.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"model {name} has no version {version}; list versions in the MLflow UI") from None
    if mv.tags.get(REGISTRATION_TAG, COMPLETE) != COMPLETE:
        raise RegistryError(f"{name} v{version} is a half-written registration (its run failed while registering "
                            "it); it cannot be promoted. Rerun the training, which registers a complete version")
    if gate_must_pass and mv.tags.get("tuneops.gate.passed") != "True":
        raise RegistryError(f"{name} v{version} did not pass its gate ({mv.tags.get('tuneops.gate.reason')}); "
                            "promote it with --force and a --reason if you are sure")
    from tuneops.faults import pause_point

    with alias_lock(name):
        old = alias_version(name, "champion")
        if old == version:
            return Promotion(version, alias_version(name, "previous"), changed=False)
        pause_point("promote:after_read_champion")
        if old is not None:
            c.set_registered_model_alias(name, "previous", old)
        c.set_registered_model_alias(name, "champion", version)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    c.set_model_version_tag(name, version, "tuneops.promoted_at", now)
    c.set_model_version_tag(name, version, "tuneops.promoted_from", old or "none")
    c.set_model_version_tag(name, version, "tuneops.promotion_reason", reason[:5000])
    return Promotion(version, old, changed=True)


def rollback(name: str, reason: str = "rollback") -> tuple[str, str]:
    """Make 'previous' the champion again; the replaced champion becomes 'previous'."""
    c = client()
    with alias_lock(name):
        previous, current = alias_version(name, "previous"), alias_version(name, "champion")
        if previous is None or current is None:
            raise RegistryError(f"model {name} has no 'previous' version to roll back to (champion: "
                                f"{current or 'none'}); promote a version explicitly with `tuneops promote`")
        c.set_registered_model_alias(name, "champion", previous)
        c.set_registered_model_alias(name, "previous", current)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    c.set_model_version_tag(name, previous, "tuneops.promoted_at", now)
    c.set_model_version_tag(name, previous, "tuneops.promoted_from", current)
    c.set_model_version_tag(name, previous, "tuneops.promotion_reason", f"rollback: {reason}"[:5000])
    return previous, current


# ----------------------------------------------------------------------------- registration


@dataclass
class Registration:
    """What the registry now holds for this run."""

    name: str
    version: str
    model_uri: str
    promoted: bool
    previous_champion: str | None


def provenance_tags(cfg: TuneopsConfig, data_fingerprint: str, splits: SplitResult, metrics: dict[str, float],
                    decision: GateDecision, code_version: str) -> dict[str, str]:
    """Tags that let every version say which data, code, config, base model, metrics and verdict."""
    tags = {
        "tuneops.task": cfg.model.task,
        "tuneops.data.path": cfg.data.source(),
        "tuneops.data.fingerprint": data_fingerprint,
        "tuneops.code_version": code_version,
        "tuneops.config_hash": cfg.fingerprint(),
        "tuneops.base_model": cfg.model.base,
        "tuneops.method": cfg.training.method,
        "tuneops.gate.passed": str(decision.passed),
        "tuneops.gate.reason": decision.reason[:5000],
    }
    from tuneops.training.base_models import provenance

    tags.update(provenance(cfg.model.base))
    lift = next((c for c in decision.checks if c["check"].startswith("lift over baseline")), None)
    if lift is not None:  # against which baseline, and by how much (with its paired CI)
        metric = cfg.gate.primary_metric
        tags.update({"tuneops.baseline": lift["check"], "tuneops.baseline.name": lift["against"],
                     f"tuneops.baseline.test_{metric}": f"{lift['baseline']:.6f}",
                     "tuneops.lift_over_baseline.bar": "none" if not lift["gated"] else f"{lift['bound']:+.6f}",
                     f"tuneops.lift_over_baseline.{metric}": f"{lift['delta']:+.6f}",
                     "tuneops.lift_over_baseline.ci": f"[{lift['ci_low']:+.6f}, {lift['ci_high']:+.6f}]"})
    tags.update({f"tuneops.split.{n}.fingerprint": f for n, f in splits.fingerprints.items()})
    tags.update({f"tuneops.metric.test_{k}": f"{v:.6f}" for k, v in metrics.items() if not k.startswith("seconds")})
    return tags


def log_and_register(trained: TrainResult, cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult,
                     metrics: dict[str, float], should_promote: bool, run_id: str) -> Registration:
    """Log the pyfunc, register one version (reused on retry), set 'challenger', maybe 'champion'.

    The order makes a killed MLflow server (or a killed process) leave a complete version or an inert one:

    1. the pyfunc and its artifacts are logged to the run (a failure here leaves no version);
    2. the version is created with every provenance tag in the same call, marked ``tuneops.registration=pending``;
    3. its description and the run's MODEL_CARD.md are written, then the mark becomes ``complete``;
    4. only a complete version gets aliases: 'challenger', then 'champion' if the gate passed (under the lock).

    Every step is idempotent and keyed by the run, so a retry of the task (or a rerun of the registration) finds
    the pending version and finishes it. If every retry fails, the pending version is inert: no alias points at
    it, :func:`promote` refuses it, and the next registration of the model deletes it (:func:`_drop_pending`).
    """
    import mlflow
    from mlflow.models import infer_signature

    import tuneops
    from tuneops import families
    from tuneops.faults import pause_point
    from tuneops.serving.runtimes import MODEL_CONFIG

    name = cfg.registry.model_name
    c = client()
    version = version_for_run(name, run_id)
    family = families.of(cfg)
    if version is None:
        _drop_pending(name)
        card = family.model_card(cfg, tags, splits, metrics, trained)
        python_model, example, output = family.pyfunc()
        (Path(trained.model_dir) / "MODEL_CARD.md").write_text(card)
        signature = infer_signature(example, output)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts={"model": trained.model_dir},
                code_paths=[str(Path(tuneops.__file__).parent)],
                signature=signature,
                input_example=example,
                pip_requirements=serving_requirements(),
                model_config=dict(MODEL_CONFIG),  # load_model(model_config={"runtime": ...}) may override it
            )
            # Tags go in with the version in one call: no version ever exists without its provenance.
            version = str(mlflow.register_model(info.model_uri, name,
                                                tags={**tags, REGISTRATION_TAG: PENDING}).version)
        pause_point("register:after_create_version")
    if c.get_model_version(name, version).tags.get(REGISTRATION_TAG, COMPLETE) != COMPLETE:
        card = family.model_card(cfg, tags, splits, metrics, trained)
        c.update_model_version(name, version, description=card)
        c.log_text(run_id, card, "MODEL_CARD.md")
        c.set_model_version_tag(name, version, REGISTRATION_TAG, COMPLETE)
    c.set_registered_model_alias(name, "challenger", version)
    previous = alias_version(name, "champion")
    if should_promote:
        promotion = promote(name, version, tags["tuneops.gate.reason"], gate_must_pass=True)
        if not promotion.changed:  # a retry after the aliases had moved: report the champion it replaced
            promoted_from = c.get_model_version(name, version).tags.get("tuneops.promoted_from")
            previous = None if promoted_from in (None, "none") else promoted_from
    return Registration(name, version, f"models:/{name}/{version}", should_promote, previous)


def _drop_pending(name: str) -> None:
    """Delete the half-written versions of ``name`` whose run has ended (a registration that never finished).

    A pending version of a run that is still RUNNING may be another process's registration in progress: kept.
    """
    from mlflow.exceptions import MlflowException

    c = client()
    for mv in c.search_model_versions(f"name = '{name}' and tag.`{REGISTRATION_TAG}` = '{PENDING}'"):
        try:
            status = c.get_run(mv.run_id).info.status if mv.run_id else "FAILED"
        except MlflowException:
            status = "FAILED"
        if status != "RUNNING":
            c.delete_model_version(name, mv.version)
