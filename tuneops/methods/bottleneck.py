"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): small residual MLPs inside every block.

Each adapter projects a sub-layer's output down (hidden -> hidden / reduction_factor), applies a
non-linearity, projects back up and adds the result to its input: ``h + up(act(down(h)))``. The
up-projection starts at (or near) zero, so the adapted model starts as the base model. Placement
``houlsby`` puts one after the attention block's output projection and one after the feed-forward
block; ``pfeiffer`` only the feed-forward one. Both sit before the block's residual connection (and,
in BERT, its LayerNorm). The base stays frozen; only the adapters (and a classifier's head) train.

The insertion points are found by module name: each setting is a list of regular expressions for
the last parts of a module's dotted name, with defaults for the common families (BERT/RoBERTa,
DistilBERT, LLaMA/Mistral/Qwen/SmolLM, GPT-2, Falcon/BLOOM, OPT); another architecture is one
pattern away.

PEFT has no bottleneck adapter and will not register a method it does not know, so this module
writes PEFT's file layout itself: ``adapter_config.json`` (the method, its settings, the base model,
the resolved target modules) and ``adapter_model.safetensors`` holding only the adapter and head
weights, named as PEFT names them (``base_model.model.<module path>``). :func:`load` puts them back
onto a freshly loaded base. An adapter after a non-linear block cannot fold into the base weights:
the base model and this adapter are always served together.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tuneops.errors import ConfigError
from tuneops.methods import Method, MethodSettings, register

ADAPTER = "bottleneck"  # the child module each adapted layer gets; its parameters are the adapter
PREFIX = "base_model.model."  # PEFT's key prefix in adapter_model.safetensors
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


class BottleneckSettings(MethodSettings):
    """Settings of method: bottleneck."""

    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="'houlsby': an adapter after the attention output projection and one after the "
        "feed-forward block of every layer; 'pfeiffer': after the feed-forward block only (half the adapters).")
    reduction_factor: int = Field(
        16, ge=1, description="Bottleneck width = hidden size / this (MiniLM's 384 / 16 = 24); lower means more "
        "capacity and more parameters.")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field(
        "relu", description="Activation between the down- and the up-projection.")
    init_scale: float = Field(
        0.0, ge=0, le=1, description="Standard deviation of the up-projection's initial weights: 0 starts every "
        "adapter as an exact identity (the base model unchanged); a small value such as 1e-3 starts near it.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the bottleneck activations while training.")
    attention_modules: list[str] = Field(
        default_factory=lambda: [r"attention\.output\.dense", r"self_attn\.o_proj", r"attn\.c_proj",
                                 r"self_attention\.dense", r"attention\.out_lin", r"self_attn\.out_proj"],
        description="Regular expressions for the end of the attention output projections' module names (an "
        "adapter follows each under placement houlsby). Defaults cover BERT/RoBERTa, LLaMA-style decoders, "
        "GPT-2, Falcon/BLOOM, DistilBERT and OPT.")
    feedforward_modules: list[str] = Field(
        default_factory=lambda: [r"layer\.\d+\.output\.dense", r"mlp\.down_proj", r"mlp\.c_proj",
                                 r"mlp\.dense_4h_to_h", r"ffn\.lin2", r"layers\.\d+\.fc2"],
        description="Regular expressions for the end of the feed-forward blocks' output projections' module names "
        "(an adapter follows each, under both placements). Same families as attention_modules.")
    head_modules: list[str] = Field(
        default_factory=lambda: ["classifier", "score"],
        description="Classification only: names of the head modules that train in full beside the adapters "
        "(PEFT's modules_to_save for SEQ_CLS).")

    @field_validator("attention_modules", "feedforward_modules")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a regular expression ({exc})") from None
        return patterns


def _matches(name: str, patterns: list[str]) -> bool:
    return any(re.search(rf"(?:^|\.)(?:{p})$", name) for p in patterns)


def insertion_points(model: Any, settings: BottleneckSettings) -> list[str]:
    """Names of the modules an adapter follows, in model order (attention and feed-forward, per placement)."""
    patterns = list(settings.feedforward_modules)
    if settings.placement == "houlsby":
        patterns += settings.attention_modules
    return [name for name, _ in model.named_modules() if name and _matches(name, patterns)]


def _width(module: Any, name: str) -> int:
    """Output width of a projection: a Linear's out_features, or a GPT-2 Conv1D's nf."""
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if not isinstance(width, int):
        raise ConfigError(f"training.bottleneck: module '{name}' ({type(module).__name__}) is no linear projection "
                          "with a known output width; narrow attention_modules / feedforward_modules to the "
                          "projections' names")
    return width


def _add_adapter_output(module: Any, inputs: Any, output: Any) -> Any:
    """Forward hook of an adapted projection: its output plus the adapter's residual update."""
    return output + getattr(module, ADAPTER)(output)


def insert(model: Any, settings: BottleneckSettings, task_type: str) -> Any:
    """Add the adapters in place, freeze the base, leave adapters (and a classifier's head) trainable.

    The adapter is a child of the projection it follows (``<projection>.bottleneck.down/up``), run by a
    forward hook, so the base model's own parameter names do not change: its weights still load from
    the base checkpoint as they are.
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    points = insertion_points(model, settings)
    if not points:
        layers = sorted({n for n, m in model.named_modules() if isinstance(m, nn.Linear)})[:8]
        raise ConfigError(
            f"training.bottleneck: no module of the base model ({type(model).__name__}) matches "
            f"feedforward_modules {settings.feedforward_modules}" + (
                f" or attention_modules {settings.attention_modules}" if settings.placement == "houlsby" else "")
            + f"; its linear layers are named like {layers}: set training.bottleneck.feedforward_modules (and "
            "attention_modules) to patterns for its feed-forward (and attention) output projections")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    activation = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[settings.non_linearity]
    modules = dict(model.named_modules())
    for name in points:
        target = modules[name]
        width = _width(target, name)
        inner = width // settings.reduction_factor
        if inner < 1:
            raise ConfigError(f"training.bottleneck.reduction_factor {settings.reduction_factor} leaves no bottleneck "
                              f"for '{name}' of width {width}; use a reduction_factor of at most {width}")
        weight = next(target.parameters())
        adapter = nn.Sequential(OrderedDict(
            down=nn.Linear(width, inner), act=activation(), dropout=nn.Dropout(settings.dropout),
            up=nn.Linear(inner, width))).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            adapter.up.weight.normal_(0.0, settings.init_scale) if settings.init_scale else adapter.up.weight.zero_()
            adapter.up.bias.zero_()
        target.add_module(ADAPTER, adapter)
        target.register_forward_hook(_add_adapter_output)
    heads = [n for n, _ in model.named_modules() if n.split(".")[-1] in settings.head_modules]
    if task_type == "SEQ_CLS":
        if not heads:
            raise ConfigError(f"training.bottleneck.head_modules {settings.head_modules} names no module of "
                              f"{type(model).__name__}; name its classification head")
        for head in heads:
            modules[head].requires_grad_(True)
    model.tuneops_bottleneck = {  # what save() writes beside the weights
        **settings.model_dump(mode="json"), "task_type": task_type, "target_modules": points,
        "modules_to_save": heads if task_type == "SEQ_CLS" else None,
    }
    return model


def is_adapter(name: str) -> bool:
    """An adapter parameter (not the head): what must have moved in training for the adapter to count as trained."""
    return f".{ADAPTER}." in f".{name}"


def save(model: Any, folder: Path) -> None:
    """PEFT's layout: adapter_config.json and adapter_model.safetensors with only the adapter and head weights."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    described = model.tuneops_bottleneck
    heads = tuple(f"{h}." for h in described["modules_to_save"] or [])
    state = {f"{PREFIX}{n}": t.detach().cpu().contiguous() for n, t in model.state_dict().items()
             if is_adapter(n) or n.startswith(heads)}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps({
        "peft_type": "BOTTLENECK", "tuneops_method": "bottleneck",
        "base_model_name_or_path": getattr(model, "name_or_path", None), "revision": None, "inference_mode": True,
        **described}, indent=2))


def load(base: Any, folder: Path) -> Any:
    """The base model with the saved adapters (and head) put back; every saved tensor must find its place."""
    from safetensors.torch import load_file

    folder = Path(folder)
    described = json.loads((folder / CONFIG).read_text())
    settings = BottleneckSettings(**{k: v for k, v in described.items() if k in BottleneckSettings.model_fields})
    model = insert(base, settings, described["task_type"])
    if model.tuneops_bottleneck["target_modules"] != described["target_modules"]:
        raise ConfigError(f"the bottleneck adapter in {folder} was trained on modules {described['target_modules']}, "
                          "but this base model has others; load it onto the base model it was trained on")
    state = {k.removeprefix(PREFIX): v for k, v in load_file(str(folder / WEIGHTS)).items()}
    heads = tuple(f"{h}." for h in described["modules_to_save"] or [])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        missing, unexpected = [str(exc).splitlines()[-1].strip()], []
    missing = [n for n in missing if is_adapter(n) or n.startswith(heads) or " " in n]
    if missing or unexpected:
        raise ConfigError(f"the bottleneck adapter in {folder} does not fit this base model (missing or mismatched: "
                          f"{missing[:3]}, unexpected: {unexpected[:3]}); load it onto the base model it was trained "
                          "on")
    return model.eval()


register(Method(name="bottleneck", summary="bottleneck adapter layers (Houlsby / Pfeiffer), served as base + adapter",
                settings=BottleneckSettings, prepare=insert, mergeable=False, save=save, load=load,
                is_adapter=is_adapter))
