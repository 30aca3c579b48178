"""Steps that `prefect deploy` runs from infra/prefect.yaml (its ``build`` section).

``load_config`` reads a shipped YAML config through the same loader as the CLI and hands the
validated, fully resolved config to the deployments as their default ``config`` parameter. The
UI then opens the train_model run form filled in with the demo config, typed and described field
by field from :class:`tuneops.config.TuneopsConfig`; the YAML file stays the one source of truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_config(path: str) -> dict[str, Any]:
    """Validate a config file; return it (``config``), the repository root and TUNEOPS_HOME for templating.

    Relative data paths stay relative: the deployments' pull step runs every flow in the repository root.
    """
    from tuneops.config import load_config as load

    cfg = load(ROOT / path)
    return {
        "config": cfg.model_dump(mode="json"),
        "root": str(ROOT),
        "home": str(Path(os.environ.get("TUNEOPS_HOME", ROOT / ".tuneops")).resolve()),
    }
