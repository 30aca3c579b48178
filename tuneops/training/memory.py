"""The memory preflight: will weights, gradients, optimizer state and activations fit in this machine's memory?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneops.config import TuneopsConfig
from tuneops.errors import TrainingError
from tuneops.training import logger


@dataclass
class MemoryEstimate:
    """Bytes needed for weights, gradients, optimizer state and a rough activation share."""

    params: int
    trainable: int
    weights_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    available_bytes: int
    device: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    def describe(self) -> str:
        gib = 1024 ** 3
        return (f"{self.device}: weights {self.weights_bytes / gib:.2f} GiB + gradients "
                f"{self.gradient_bytes / gib:.2f} GiB + AdamW state {self.optimizer_bytes / gib:.2f} GiB + "
                f"activations ~{self.activation_bytes / gib:.2f} GiB = {self.total_bytes / gib:.2f} GiB needed, "
                f"{self.available_bytes / gib:.2f} GiB available ({self.trainable:,} of {self.params:,} parameters "
                "trainable)")


def available_memory() -> tuple[str, int]:
    """Free memory of the device that will train: the first GPU, or this machine's available RAM."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return f"GPU {torch.cuda.get_device_name(0)}", int(free)
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return "CPU RAM", int(fields["MemAvailable"].split()[0]) * 1024


def estimate_memory(model: Any, cfg: TuneopsConfig, hidden_size: int, layers: int) -> MemoryEstimate:
    """Parameter, gradient and AdamW memory for this model and method, plus activations for one batch."""
    bytes_per = 2 if cfg.training.precision in ("bf16", "fp16") else 4
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = cfg.training.batch_size * cfg.model.max_length
    # ~16 saved tensors of hidden size per token and layer in a BERT/GPT block, fp32 unless mixed precision.
    activations = tokens * hidden_size * layers * 16 * bytes_per
    device, available = available_memory()
    return MemoryEstimate(params, trainable, params * bytes_per, trainable * 4, trainable * 8, activations,
                          available, device)


def preflight(model: Any, cfg: TuneopsConfig) -> MemoryEstimate:
    """Refuse a run that cannot fit, with the numbers, before any time is spent training."""
    config = model.config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 768)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    estimate = estimate_memory(model, cfg, hidden, layers)
    if estimate.total_bytes > estimate.available_bytes:
        raise TrainingError(
            f"this run does not fit in memory: {estimate.describe()}. Use a parameter-efficient method "
            "(training.method: lora), a smaller training.batch_size with gradient_accumulation_steps, a shorter "
            "model.max_length, or a bigger device")
    logger().info("memory preflight: %s", estimate.describe())
    return estimate
