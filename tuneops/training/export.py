"""From the trained model to the registered folder: adapters attached and checked (a silently empty adapter is
caught before registration), full weights or an adapter-only folder pinned to its base, and the trained model
rebuilt from the best checkpoint."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.config import TuneopsConfig
from tuneops.errors import TrainingError
from tuneops.training.memory import preflight


def trainable_snapshot(model: Any, is_adapter: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """A copy of the trainable adapter tensors before training, to prove later that they moved.

    ``is_adapter`` (the method's) leaves out a trained head: the adapter proper must move too.
    """
    from tuneops.methods import peft_adapter_parameter

    is_adapter = is_adapter or peft_adapter_parameter
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and is_adapter(n)}


def check_adapter(model: Any, before: dict[str, Any], adapter_dir: Path, method: str) -> dict[str, Any]:
    """Fail if the saved adapter is empty, not finite, or identical to its initialisation."""
    import torch
    from safetensors.torch import load_file

    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise TrainingError(f"the adapter was not saved ({weights_file} is missing); check the disk and rerun")
    saved = load_file(str(weights_file))
    if not saved or sum(t.numel() for t in saved.values()) == 0:
        raise TrainingError(f"the saved adapter {weights_file} holds no weights; check training.{method}"
                            " target modules match the base model's layer names")
    bad = [n for n, t in saved.items() if not torch.isfinite(t).all()]
    if bad:
        raise TrainingError(f"the adapter has non-finite weights ({bad[0]} and {len(bad) - 1} more); lower "
                            "training.learning_rate or use precision fp32")
    after = {n: p.detach() for n, p in model.named_parameters()}
    # The snapshot was taken on the CPU in fp32; training may have moved the model to a GPU and to bf16.
    moved = sum(1 for n, t in before.items() if n in after and not torch.equal(t.to(after[n].device, after[n].dtype),
                                                                               after[n]))
    if before and moved == 0:
        raise TrainingError("the adapter did not change during training (every adapter weight equals its "
                            "initial value); raise training.learning_rate or epochs, or check target modules")
    return {"adapter_tensors": len(saved), "adapter_params": int(sum(t.numel() for t in saved.values())),
            "adapter_tensors_trained": moved}


@dataclass
class Prepared:
    """The model to train, its parameter counts, and its adapter weights before training."""

    model: Any
    trainable: int
    total: int
    initial: dict[str, Any]


def prepare_model(load_base: Any, cfg: TuneopsConfig, task_type: str) -> Prepared:
    """Wrap the base model with the configured method and check it fits in memory before training."""
    from tuneops import methods

    model = build_model(load_base, cfg, task_type)
    preflight(model, cfg)
    return Prepared(model, sum(p.numel() for p in model.parameters() if p.requires_grad),
                    sum(p.numel() for p in model.parameters()),
                    trainable_snapshot(model, methods.get(cfg.training.method).is_adapter)
                    if cfg.training.method != "full" else {})


def build_model(load_base: Any, cfg: TuneopsConfig, task_type: str) -> Any:
    """The base model wrapped with the configured method (untrained adapters; the base for 'full')."""
    from tuneops import methods

    return methods.get(cfg.training.method).prepare(load_base(), cfg.training.method_settings(), task_type)


def trained_model(trainer: Any, rebuild: Any) -> Any | None:
    """The trained model with every weight in place, on rank 0; None on the other workers.

    Under DeepSpeed ZeRO-3 each worker holds a shard of every weight, so the model in memory cannot be
    exported as it is: all workers join the gather of the full weights (a collective, hence called on
    every rank), and rank 0 loads them into a freshly built copy of the model (``rebuild()``).
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if not (getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3):
        return trainer.model if trainer.is_world_process_zero() else None
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.is_world_process_zero():
        return None
    with plain_loading():
        model = rebuild()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"the ZeRO-3 workers' gathered weights do not fit the model: {exc}. Keep "
                            '"stage3_gather_16bit_weights_on_model_save": true in the DeepSpeed config') from None
    return model


@contextlib.contextmanager
def plain_loading() -> Iterator[None]:
    """Load models whole, in this process alone, while a ZeRO-3 Trainer exists.

    transformers builds every model under ``deepspeed.zero.Init`` (collective, sharded) as long as a
    ZeRO-3 config is registered; rank 0's export after training must load models by itself.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    registered = hf_deepspeed._hf_deepspeed_config_weak_ref  # no public getter; restored below
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered


def export_model(trained: Any, initial: dict[str, Any], cfg: TuneopsConfig, model_dir: Path,
                 tokenizer: Any, pinned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the trained model as serving loads it; returns the adapter check's report.

    Full fine-tuning writes its weights. Adapter methods write an adapter-only folder
    (:mod:`tuneops.training.model_loading`): the adapter, checked (PEFT format, resolved settings beside it), the
    model's transformers config and a pinned reference to the base (``pinned``: as pinned when training started;
    None: ``model.base`` pinned now); no merged copy and no copy of the base.
    """
    from tuneops.training.model_loading import ADAPTER_DIR, save_base_reference

    method = cfg.training.method
    report: dict[str, Any] = {}
    if method == "full":
        trained.save_pretrained(model_dir)
    else:
        save_adapter(trained, model_dir / ADAPTER_DIR, cfg)
        report = check_adapter(trained, initial, model_dir / ADAPTER_DIR, method)
        save_base_reference(trained, pinned or cfg.model.base, model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "tuneops_config.json").write_text(cfg.model_dump_json(indent=2))
    return report


def save_adapter(model: Any, adapter_dir: Path, cfg: TuneopsConfig) -> None:
    """PEFT-format adapter (written by the method's save hook), with the resolved settings and training config
    beside it."""
    from tuneops import methods

    methods.get(cfg.training.method).save(model, adapter_dir)
    settings = cfg.training.method_settings()
    (adapter_dir / "tuneops_method.json").write_text(json.dumps({
        "method": cfg.training.method,
        "settings": settings.model_dump(mode="json") if settings is not None else None,
        "base_model": cfg.model.base,
        "training": cfg.training.model_dump(mode="json"),
    }, indent=2))
