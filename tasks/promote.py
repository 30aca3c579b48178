"""The move-alias task of the promote_model flow: promotion and rollback are tuneops.registry.versions's."""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger, task

from tuneops.registry import versions as registry


@task(name="move-alias", retries=2, retry_delay_seconds=5)
def move_alias(name: str, action: Literal["promote", "rollback"], version: str | None, reason: str,
               force: bool) -> dict[str, str | None]:
    """Promote a version (the old champion becomes 'previous') or roll back to 'previous'."""
    if action == "rollback":
        champion, previous = registry.rollback(name, reason)
    else:
        if version is None:
            raise registry.RegistryError("promote needs a version; pass version=N")
        if force and not reason.strip():
            raise registry.RegistryError("force=True needs a reason that says why the gate is overridden")
        promotion = registry.promote(name, version, reason, gate_must_pass=not force)
        if not promotion.changed:
            get_run_logger().warning("%s v%s is already the champion; nothing changed", name, version)
        champion, previous = promotion.champion, promotion.previous
    return {"model": name, "champion": champion, "previous": previous}
