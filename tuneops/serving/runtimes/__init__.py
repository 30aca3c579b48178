"""Inference runtimes, one module each, found by name (``serving.runtime``).

A runtime is how a loaded model computes its predictions: PyTorch fp32 (the reference), PyTorch with dynamic
int8 quantisation of the linear layers, ONNX Runtime over an exported graph, bf16 where the CPU computes it.
Every module in this package that calls :func:`register` is a runtime: adding one means adding a file; the
config accepts its name, the pyfuncs take it as ``model_config={"runtime": NAME}``.

A runtime other than fp32 serves a registered version only after it agreed with fp32 on that version's
validation split (:mod:`tuneops.serving.runtime_check`). This package imports torch only inside functions, so that
the config, which imports it to know the names, stays cheap to import.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.errors import ConfigError, TuneopsError
from tuneops.plugins import Registry, caller_module

REFERENCE = "fp32"
AUTO = "auto"

Forward = Callable[[dict[str, Any]], Any]
"""A classifier's forward pass: the tokenizer's tensors in, a torch tensor of logits (batch x labels) out."""


class RuntimeRefused(TuneopsError):
    """A runtime cannot serve this model here: the CPU lacks it, the family has no such runtime, or it disagreed
    with fp32 on the validation split."""


@dataclass(frozen=True)
class Runtime:
    """One inference runtime.

    ``classifier(model, tokenizer, model_dir)`` turns a loaded fp32 sequence classifier into its forward pass
    (None: classifiers cannot use it). ``generator(model)`` returns the causal LM to generate with and the
    precision to generate under (None: causal LMs cannot use it; ``unsupported`` says why).
    ``unavailable()`` says why this machine cannot run it (None: it can). ``merges``: it needs plain weights, so an
    adapter is merged into the base when a version loads on it (bf16, int8, onnx); such a runtime serves an adapter
    version only if the version passed its merged-vs-unmerged check (:mod:`tuneops.training.merge_check`). fp32
    does not merge: a version that stores its adapter is served as the base with the adapter beside it, as trained.
    """

    name: str
    summary: str
    classifier: Callable[[Any, Any, Path], Forward] | None
    generator: Callable[[Any], tuple[Any, str]] | None = None
    unavailable: Callable[[], str | None] = lambda: None
    unsupported: str = ""
    merges: bool = False


RUNTIMES: Registry[Runtime] = Registry("runtime")


def register(runtime: Runtime) -> Runtime:
    """Add a runtime under its name (at a runtime module's top level); a name another module registered already is
    refused (:class:`tuneops.plugins.NameTaken`, naming both modules)."""
    return RUNTIMES.add(runtime.name, runtime, by=caller_module())


def get(name: str) -> Runtime:
    """The runtime of that name, or a ConfigError listing the known ones."""
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{name}'; known: {', '.join(RUNTIMES)} (serving.runtime, or {AUTO})")
    return RUNTIMES[name]


def usable(name: str, noun: str, for_generation: bool) -> Runtime:
    """The runtime, refused with the reason and the fix when this machine or this kind of model cannot use it."""
    runtime = get(name)
    why = runtime.unavailable()
    if why is None and (runtime.generator if for_generation else runtime.classifier) is None:
        why = runtime.unsupported or f"runtime {name} is not supported for a {noun}"
    if why is not None:
        raise RuntimeRefused(f"runtime {name} cannot serve this {noun}: {why}; use serving.runtime: {REFERENCE} "
                             "(or another runtime)")
    return runtime


MODEL_CONFIG: dict[str, Any] = {"runtime": REFERENCE, "batch_size": None, "share_base": False}
"""What a registered pyfunc is logged with: MLflow lets ``load_model(model_config=...)`` override only the keys
logged, so every version accepts ``runtime`` (and ``batch_size``: None keeps the family's default; ``share_base``:
True shares an unmerged adapter-only model's base weights with the other models on that base in the process)."""


def require_model_config(model: Any, runtime: str, what: str) -> None:
    """Refuse a runtime for a loaded pyfunc logged without a ``runtime`` model config (MLflow would silently
    ignore it and serve fp32 under the runtime's name)."""
    if runtime != REFERENCE and "runtime" not in (getattr(model, "model_config", None) or {}):
        raise RuntimeRefused(f"{what} was registered before inference runtimes existed (its pyfunc takes no "
                             f"model_config), so it cannot run on {runtime}; serve it with serving.runtime: "
                             f"{REFERENCE}, or train and register it again")


def model_config_runtime(model_config: dict[str, Any] | None) -> str:
    """The runtime a pyfunc was loaded with (``mlflow.pyfunc.load_model(uri, model_config={"runtime": ...})``)."""
    return str((model_config or {}).get("runtime") or REFERENCE)


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (/proc/cpuinfo); empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
