"""The MLflow model registry as the source of truth: registered versions with their provenance, aliases, audit tags.

:func:`log_and_register` writes a version (pyfunc, model card, provenance tags in one call);
:func:`promote` and :func:`rollback` move the ``champion`` / ``previous`` aliases and record why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.errors import RegistryError
from tuneops.tracking import client

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.gate import GateDecision
    from tuneops.splits import SplitResult
    from tuneops.training import TrainResult

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


def promote(name: str, version: str, reason: str, *, gate_must_pass: bool = True) -> str | None:
    """Point 'champion' at ``version``; the old champion becomes 'previous'. Returns the old champion."""
    c = client()
    from mlflow.exceptions import MlflowException

    try:
        mv = c.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"model {name} has no version {version}; list versions in the MLflow UI") from None
    if gate_must_pass and mv.tags.get("tuneops.gate.passed") != "True":
        raise RegistryError(f"{name} v{version} did not pass its gate ({mv.tags.get('tuneops.gate.reason')}); "
                            "promote it with --force and a --reason if you are sure")
    old = alias_version(name, "champion")
    if old == version:
        return old
    if old is not None:
        c.set_registered_model_alias(name, "previous", old)
    c.set_registered_model_alias(name, "champion", version)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    c.set_model_version_tag(name, version, "tuneops.promoted_at", now)
    c.set_model_version_tag(name, version, "tuneops.promoted_from", old or "none")
    c.set_model_version_tag(name, version, "tuneops.promotion_reason", reason[:5000])
    return old


def rollback(name: str, reason: str = "rollback") -> tuple[str, str]:
    """Make 'previous' the champion again; the replaced champion becomes 'previous'."""
    previous, current = alias_version(name, "previous"), alias_version(name, "champion")
    if previous is None or current is None:
        raise RegistryError(f"model {name} has no 'previous' version to roll back to (champion: "
                            f"{current or 'none'}); promote a version explicitly with `tuneops promote`")
    c = client()
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
    from tuneops.bases import provenance

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
    """Log the pyfunc, register one version (reused on retry), set 'challenger', maybe 'champion'."""
    import mlflow
    from mlflow.models import infer_signature

    import tuneops
    from tuneops import families
    from tuneops.runtimes import MODEL_CONFIG

    name = cfg.registry.model_name
    version = version_for_run(name, run_id)
    if version is None:
        family = families.of(cfg)
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
            version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
        client().update_model_version(name, version, description=card)
        client().log_text(run_id, card, "MODEL_CARD.md")
    c = client()
    c.set_registered_model_alias(name, "challenger", version)
    previous = alias_version(name, "champion")
    if should_promote:
        promote(name, version, tags["tuneops.gate.reason"], gate_must_pass=True)
    return Registration(name, version, f"models:/{name}/{version}", should_promote, previous)
