"""CPU bf16: does this CPU compute bf16 in hardware, does it pay here, and the mixed precision a run trains in."""

from __future__ import annotations

import functools
import os

from tuneops.config import TuneopsConfig
from tuneops.errors import TrainingError
from tuneops.training import logger


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), which CPU autocast needs to be worth it."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # no public getter in torch 2.13
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def cpu_bf16_speedup() -> float:
    """bf16 over fp32 matmul throughput on this CPU (1024-square matmuls, best of five each; about 0.1 s, once per
    process). AVX512-BF16 without AMX can be slower than AVX-512 fp32: 0.54x was measured on such a Xeon."""
    import time

    import torch

    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_bf16_pays() -> tuple[bool, str]:
    """Whether bf16 autocast speeds this CPU up, and if not, why (said in the fallback warning).
    ``TUNEOPS_CPU_BF16=on`` uses it wherever the CPU has bf16 instructions, faster or not."""
    import torch

    if not cpu_supports_bf16():
        return False, f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 instructions"
    if os.environ.get("TUNEOPS_CPU_BF16", "auto") == "on":  # e.g. to measure bf16's effect on accuracy anyway
        return True, "TUNEOPS_CPU_BF16=on"
    speedup = cpu_bf16_speedup()
    if speedup < 1.0:
        return False, f"this CPU has bf16 instructions but its bf16 matmuls run at {speedup:.2f}x the speed of fp32"
    return True, f"bf16 matmuls run at {speedup:.2f}x fp32 here"


def mixed_precision(cfg: TuneopsConfig) -> tuple[bool, bool]:
    """(bf16, fp16) for the Trainer: bf16 runs under autocast on a GPU or on a CPU where it is faster, else fp32."""
    import torch

    precision, gpu = cfg.training.precision, torch.cuda.is_available()
    if precision == "fp16" and not gpu:
        raise TrainingError("training.precision fp16 needs a GPU; on a CPU use bf16 (where the CPU supports it) or "
                            "fp32")
    if precision == "bf16" and not gpu:
        pays, why = cpu_bf16_pays()
        if not pays:
            logger().warning("training.precision bf16: %s, so it trains in fp32", why)
            return False, False
    return precision == "bf16", precision == "fp16"
