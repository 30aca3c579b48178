"""The MLflow model registry as the source of truth: versions, aliases, audit tags."""

from __future__ import annotations

from datetime import UTC, datetime

from tuneops.errors import RegistryError
from tuneops.tracking import client


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
