"""The parts of the fine-tuning engine that every task family shares.

Training arguments from the one config, the callbacks (MLflow metrics, progress, early stopping),
the adapter checks that stop a silently empty adapter before it is registered, export (merged
weights, or base + adapter for methods that cannot merge), and the memory preflight.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.config import TuneopsConfig
from tuneops.errors import TuneopsError

_log = logging.getLogger("tuneops.training.engine")


def logger() -> logging.Logger:
    """The engine's logger. Prefect forwards the ``tuneops`` loggers to the run's log (shown in the UI and the
    CLI) through PREFECT_LOGGING_EXTRA_LOGGERS, which :func:`tuneops.settings.configure_environment` sets; a
    worker process of a distributed launch gives it a handler of its own."""
    return _log


class TrainingError(TuneopsError):
    """Training cannot start or its result cannot be trusted (memory, empty adapter, export mismatch)."""


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


def training_arguments(cfg: TuneopsConfig, output_dir: Path, metric: str, **overrides: Any) -> Any:
    """TrainingArguments from the config: epoch-wise evaluation and checkpoints, best epoch restored."""
    import torch
    from transformers import TrainingArguments

    t = cfg.training
    bf16, fp16 = mixed_precision(cfg)
    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        label_smoothing_factor=t.label_smoothing,
        warmup_steps=t.warmup_ratio,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=not metric.endswith(("loss", "perplexity")),
        train_sampling_strategy="group_by_length",
        logging_steps=10,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        args["ddp_backend"] = "gloo"
    if t.distributed.launcher == "deepspeed":
        args["deepspeed"] = deepspeed_config(cfg, world)
    args.update(overrides)
    return TrainingArguments(**args)


_BLOCK = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)(?:embeddings|embed_tokens|wte|wpe)\.")


def learning_rate_of(names: list[str], cfg: TuneopsConfig) -> dict[str, float]:
    """Each trainable parameter's learning rate under ``head_learning_rate`` and ``layer_lr_decay``.

    Transformer blocks are found by their numbered module (``encoder.layer.3.``, ``model.layers.11.``); the top
    one trains at ``learning_rate`` and each below at ``layer_lr_decay`` times the one above; embeddings one step
    below the lowest block; everything else (head, pooler, final norm, prompt encoders) at the head's rate.
    """
    t = cfg.training
    head = t.head_learning_rate or t.learning_rate
    blocks = {n: int(m.group(1)) for n in names if (m := _BLOCK.search(n))}
    top = max(blocks.values(), default=-1)
    rates = {}
    for name in names:
        if name in blocks:
            rates[name] = t.learning_rate * t.layer_lr_decay ** (top - blocks[name])
        elif _EMBEDDINGS.search(name) and "prompt_encoder" not in name:
            rates[name] = t.learning_rate * t.layer_lr_decay ** (top + 1)
        else:
            rates[name] = head
    return rates


def optimizer(model: Any, cfg: TuneopsConfig) -> Any | None:
    """Fused AdamW with per-layer learning rates, or None when every parameter shares ``learning_rate`` (the
    Trainer's own optimizer then). Biases and norm weights get no weight decay, as in the Trainer."""
    t = cfg.training
    if t.head_learning_rate is None and t.layer_lr_decay == 1.0:
        return None
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rates = learning_rate_of(list(params), cfg)
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, param in params.items():
        decay = 0.0 if name.endswith(".bias") or "norm" in name.lower() else t.weight_decay
        groups.setdefault((rates[name], decay), []).append(param)
    # fused: one kernel over all tensors, as the Trainer's own default (the per-tensor loop is ~9x slower on CPU)
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                             lr=t.learning_rate, fused=True)


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


def quiet(trainer: Any) -> Any:
    """Drop the Trainer's own printer of raw log dicts: the Progress callback logs them readably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def callbacks(cfg: TuneopsConfig, run_id: str | None) -> list[Any]:
    """MLflow metrics per logging step, a progress line per log, early stopping when configured."""
    import time

    from transformers import EarlyStoppingCallback, TrainerCallback

    from tuneops import progress
    from tuneops.registry import tracking

    class Progress(TrainerCallback):
        """Loss curves and validation metrics to MLflow; a readable progress line, with the pace and the time
        left, to the log."""

        began, first_step = time.perf_counter(), 0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.began, self.first_step = time.perf_counter(), state.global_step  # a resumed run's steps, not ours

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            numbers = {k.replace("eval_", "validation_"): v for k, v in (logs or {}).items()
                       if isinstance(v, int | float) and not k.endswith(("_runtime", "per_second"))}
            if not numbers or not state.is_world_process_zero:
                return
            if run_id:
                tracking.log_metrics(run_id, numbers, step=state.global_step)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if k != "epoch")
            per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            pace = progress.training(state.global_step, state.max_steps, self.first_step,
                                     time.perf_counter() - self.began, per_step)
            logger().info("step %d/%d (epoch %.2f): %s; %s", state.global_step, state.max_steps, state.epoch or 0,
                          shown, pace)

    found: list[Any] = [Progress()]
    if cfg.training.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
    return found


# --------------------------------------------------------------------------- checkpoints

COMPLETE = "_COMPLETE"  # written last into a mirrored checkpoint: its presence means the copy is whole


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written completely; a half-written one (killed mid-save) is removed."""
    import shutil

    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for candidate in candidates:
        try:  # the Trainer writes trainer_state.json last: parseable means the checkpoint is whole
            json.loads((candidate / "trainer_state.json").read_text())
            if any(candidate.glob("rng_state*.pth")):
                return str(candidate)
        except (OSError, ValueError):
            pass
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def fetch_remote_checkpoint(uri: str, local: Path) -> str | None:
    """Download the newest complete mirrored checkpoint under ``uri`` into ``local``; None if there is none."""
    from tuneops.data import storage

    complete = sorted({key.split("/")[0] for key in storage.list_keys(uri) if key.endswith(f"/{COMPLETE}")},
                      key=lambda name: int(name.split("-")[-1]))
    if not complete:
        return None
    newest = complete[-1]
    storage.download_folder(f"{uri.rstrip('/')}/{newest}", local / newest)
    (local / newest / COMPLETE).unlink(missing_ok=True)
    return last_complete_checkpoint(local)


def checkpoint_mirror(uri: str) -> Any:
    """A callback that copies each new checkpoint to ``uri`` and drops mirrored ones the Trainer rotated away."""
    from transformers import TrainerCallback

    from tuneops.data import storage

    class Mirror(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            local = Path(args.output_dir)
            newest = local / f"checkpoint-{state.global_step}"
            if newest.is_dir():
                storage.upload_folder(newest, f"{uri.rstrip('/')}/{newest.name}")
                storage.write_bytes(b"", f"{uri.rstrip('/')}/{newest.name}/{COMPLETE}")
            kept = {p.name for p in local.glob("checkpoint-*")}
            for name in {key.split("/")[0] for key in storage.list_keys(uri)} - kept:
                storage.delete_folder(f"{uri.rstrip('/')}/{name}")

    return Mirror()


# --------------------------------------------------------------------------- adapters


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


def best_evaluation(trainer: Any) -> dict[str, float]:
    """The validation metrics of the epoch the Trainer restored at the end (``load_best_model_at_end``).

    Every epoch is evaluated during training and the restored weights are that epoch's own, so evaluating them
    again after training repeats a full validation pass for the same numbers (about 6 s of the demo's run on
    2 cores, more on larger data). They are read from the Trainer's log instead; only when the log lacks that
    epoch's entry (a run resumed from a checkpoint written without it) is the pass run again. The exported model
    is still re-scored against these numbers (``TrainingPlan.verify_export``).
    """
    state = trainer.state
    if state.best_global_step is not None:
        for entry in reversed(state.log_history):
            if entry.get("step") == state.best_global_step and "eval_loss" in entry:
                return {k: float(v) for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()


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
                 load_base: Any, tokenizer: Any) -> dict[str, Any]:
    """Write the trained model as serving loads it; returns the adapter check's report.

    Adapter methods first save and check the adapter (PEFT format, resolved settings beside it);
    mergeable methods then write plain merged weights, the others the frozen base beside the adapter.
    """
    from tuneops import methods
    from tuneops.families.classification.predictor import ADAPTER_DIR, BASE_DIR

    method = cfg.training.method
    report: dict[str, Any] = {}
    if method != "full":
        save_adapter(trained, model_dir / ADAPTER_DIR, cfg)
        report = check_adapter(trained, initial, model_dir / ADAPTER_DIR, method)
    if methods.get(method).mergeable:
        (trained.merge_and_unload() if method != "full" else trained).save_pretrained(model_dir)
    else:
        load_base().save_pretrained(model_dir / BASE_DIR)
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


# --------------------------------------------------------------------------- memory preflight


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
