"""fp32: plain PyTorch in float32, the reference every other runtime is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneops.serving.runtimes import Forward, Runtime, register


def classifier(model: Any, tokenizer: Any, model_dir: Path) -> Forward:
    return lambda enc: model(**enc).logits


register(Runtime(name="fp32", summary="PyTorch, float32 (the reference)", classifier=classifier,
                 generator=lambda model: (model, "fp32")))
