"""bf16: PyTorch under CPU bf16 autocast, on CPUs that compute bf16 in hardware (AVX512-BF16 or AMX).

Elsewhere bf16 is emulated and slower than fp32, so the runtime is refused there. Matmuls run in bf16, softmax
and layer norms stay in float32 (autocast's lists); the logits come back as float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneops.serving.runtimes import Forward, Runtime, cpu_flags, register

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def unavailable() -> str | None:
    flags = cpu_flags()
    if any(f in flags for f in BF16_FLAGS):
        return None
    return (f"this CPU reports none of {', '.join(BF16_FLAGS)} in /proc/cpuinfo, so bf16 would be emulated "
            "(slower than fp32)")


def classifier(model: Any, tokenizer: Any, model_dir: Path) -> Forward:
    import torch

    def forward(enc: dict[str, Any]) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(**enc).logits.float()

    return forward


register(Runtime(name="bf16", summary="PyTorch under CPU bf16 autocast (CPUs with AVX512-BF16 or AMX)",
                 classifier=classifier, generator=lambda model: (model, "bf16"), unavailable=unavailable, merges=True))
