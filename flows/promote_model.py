"""promote_model: move the registry's 'champion' alias by hand, from the Prefect UI or the CLI."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tuneops.tasks.promote import move_alias


@flow(name="promote_model")
def promote_model(name: str, version: str | None = None, reason: str = "", force: bool = False,
                  action: Literal["promote", "rollback"] = "promote") -> dict[str, str | None]:
    """Point 'champion' at a version (or roll back to 'previous'), leaving audit tags.

    1. check the version's gate (unless force, which needs a reason);
    2. move the aliases: champion -> version, previous -> old champion (or swap them on rollback);
    3. record the change as a Prefect artifact; the version carries promoted_at/from/reason tags.
    """
    result = move_alias(name, action, version, reason or action, force)
    create_markdown_artifact(f"# {name}: champion is v{result['champion']}\n\n{action} (previous: "
                             f"v{result['previous']}). Reason: {reason or action}", key="promotion")
    get_run_logger().info("%s: champion v%s, previous v%s", name, result["champion"], result["previous"])
    return result
