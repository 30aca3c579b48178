"""The DeepSpeed configuration a distributed launch trains with, from the one config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneops.config import TuneopsConfig
from tuneops.errors import TrainingError


def deepspeed_config(cfg: TuneopsConfig, world_size: int) -> dict[str, Any]:
    """The configured DeepSpeed JSON with its "auto" values filled from the training config.

    Values that depend on the step count (scheduler) stay "auto" for the Trainer to fill.
    """
    t = cfg.training
    path = Path(t.distributed.deepspeed_config or "")
    try:
        ds = json.loads(path.read_text())
    except OSError as exc:
        raise TrainingError(f"training.distributed.deepspeed_config {path} cannot be read ({exc.strerror}); use "
                            "configs/deepspeed/zero2.json or zero3.json") from None
    except ValueError as exc:
        raise TrainingError(f"training.distributed.deepspeed_config {path} is not valid JSON: {exc}") from None
    filled = {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.batch_size * t.gradient_accumulation_steps * world_size,
        "gradient_clipping": 1.0,
    }
    for key, value in filled.items():
        if ds.get(key) == "auto":
            ds[key] = value
    for precision in ("bf16", "fp16"):
        if isinstance(ds.get(precision), dict) and ds[precision].get("enabled") == "auto":
            ds[precision]["enabled"] = t.precision == precision
    return ds
