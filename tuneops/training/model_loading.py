"""Loading a saved model folder: the one function (:func:`load_saved_model`) every family's predictor calls.

A registered version's model folder has one of three formats (:func:`folder_format`):

- ``merged``: plain transformers weights (full fine-tuning, and every version registered before adapter-only
  versions: LoRA and IA3 were merged into the base, their ``adapter/`` kept beside the weights for combining);
- ``base+adapter``: the frozen base under ``base/`` and the adapter under ``adapter/`` (how methods that cannot
  merge, prefix, prompt and bottleneck, were registered before adapter-only versions);
- ``adapter-only``: what was trained and nothing else: ``adapter/`` (PEFT format, ``tuneops_method.json``
  beside it), the model's transformers ``config.json`` (no weights), the tokenizer and the family's files, and
  ``tuneops_base.json``, a pinned reference to the base (:func:`pin`): a packaged base by package name, version
  and the SHA-256 of its weights file, a registered base by ``models:/NAME/VERSION`` and its run, a local folder
  or a hub snapshot by a content hash. Weights the base checkpoint lacks and training left frozen (a
  masked-LM head an encoder came without, drawn at random when training started) are kept in
  ``tuneops_base_extra.safetensors``.

Loading an adapter-only version resolves its base once per process, checks the hash (the hash of a big file is
remembered by path, size and mtime, :func:`tuneops.training.packaged_models.file_sha256`), loads the base with the
version's config, attaches the adapter and merges it in memory only when asked (``merge=True``: a runtime that
needs plain weights). A base that is missing or differs fails with :class:`tuneops.errors.BaseModelError` (exit 2).
With ``share_base=True`` every unmerged model loaded in this process on the same base uses one copy of the base's
frozen checkpoint weights (the task head and everything trained stay each model's own).

A registered version used as a base (``model.base: models:/NAME/VERSION``) is downloaded once into
``$TUNEOPS_HOME/bases/``; an adapter-only one of a method that merges is materialised there once as plain merged
weights (:func:`registered_base`), which is what training starts from.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneops.errors import BaseModelError, ConfigError
from tuneops.training.packaged_models import PACKAGED, file_sha256, folder_sha256

ADAPTER_DIR = "adapter"  # PEFT-format adapter (every adapter method), with its resolved settings beside it
BASE_DIR = "base"  # the frozen base, in versions of methods that cannot merge registered before adapter-only ones
METHOD_FILE = "tuneops_method.json"  # in adapter/: the method, its resolved settings, the training settings
BASE_FILE = "tuneops_base.json"  # an adapter-only version's pinned base
EXTRA_FILE = "tuneops_base_extra.safetensors"  # frozen weights the base checkpoint does not hold
MATERIALISED_FILE = "tuneops_materialised.json"  # beside a registered adapter-only version merged for training
REGISTERED = "models:/"
MERGED, BASE_AND_ADAPTER, ADAPTER_ONLY = "merged", "base+adapter", "adapter-only"


def folder_format(model_dir: Path) -> str:
    """Which of the three formats a saved model folder is (see the module's docstring)."""
    model_dir = Path(model_dir)
    if (model_dir / BASE_FILE).is_file() and (model_dir / ADAPTER_DIR).is_dir():
        return ADAPTER_ONLY
    if (model_dir / BASE_DIR).is_dir() and (model_dir / ADAPTER_DIR).is_dir():
        return BASE_AND_ADAPTER
    return MERGED


def adapter_method(model_dir: Path) -> str:
    """The method that trained the adapter of a folder (``adapter/tuneops_method.json``)."""
    return str(json.loads((Path(model_dir) / ADAPTER_DIR / METHOD_FILE).read_text())["method"])


# ----------------------------------------------------------------------------- registered versions as bases


def registered_version(base: str) -> tuple[str, str, Any]:
    """(name, version, MLflow model version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    from mlflow.exceptions import MlflowException

    from tuneops.registry.tracking import client

    ref = base.removeprefix(REGISTERED)
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, version = ref.rpartition("/")
        if not name or not version:
            raise ConfigError(f"model.base '{base}' is not models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        mv = client().get_model_version_by_alias(name, alias) if sep else client().get_model_version(name, version)
    except MlflowException as exc:
        raise ConfigError(f"model.base '{base}' is not in the model registry ({exc.message.splitlines()[0]}); name a "
                          "registered version as models:/NAME@ALIAS or models:/NAME/VERSION") from None
    return name, str(mv.version), mv


def _downloaded(name: str, version: str, run_id: str) -> Path:
    """The registered version's exported model folder, downloaded once into $TUNEOPS_HOME/bases (again when the
    version number now names another run's model)."""
    import mlflow

    from tuneops import settings

    target = settings.home() / "bases" / f"{name}-v{version}"
    marker = target / "tuneops_registered.json"
    recorded = json.loads(marker.read_text()).get("run_id") if marker.is_file() else run_id
    if not (_model_artifact(target) / "config.json").is_file() or recorded != run_id:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(target))
        marker.write_text(json.dumps({"run_id": run_id}))
    return _model_artifact(target)


def _model_artifact(target: Path) -> Path:
    """The folder of a downloaded pyfunc's ``model`` artifact (``artifacts/model`` as tuneops registers it)."""
    import yaml

    mlmodel = target / "MLmodel"
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {}) \
        if mlmodel.is_file() else {}
    path = (flavor.get("artifacts") or {}).get("model", {}).get("path")
    return target / (path or "artifacts/model")


def registered_base(base: str) -> Path:
    """The folder a registered version trains from: its merged weights as registered, or, for an adapter-only
    version of a method that merges, the base with the adapter merged in, materialised once beside the download.
    A version of a method that cannot merge is refused (it is a frozen base plus an adapter, not one model)."""
    name, version, mv = registered_version(base)
    return _trainable_folder(base, name, version, str(mv.run_id))


def _trainable_folder(base: str, name: str, version: str, run_id: str) -> Path:
    from tuneops import methods, settings

    folder = _downloaded(name, version, run_id)
    kind = folder_format(folder)
    if kind != MERGED and not methods.get(adapter_method(folder)).mergeable:
        raise ConfigError(f"model.base '{base}' ({name} v{version}) holds a frozen base plus a "
                          f"'{adapter_method(folder)}' adapter, which cannot be trained further as one model; start "
                          "from a version trained with full, lora or ia3 (they merge into plain weights)")
    if kind == ADAPTER_ONLY:
        return _materialised(folder, settings.home() / "bases" / f"{name}-v{version}" / "merged",
                             f"models:/{name}/{version}")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.base '{base}' ({name} v{version}) has no exported model folder; was it registered "
                          "by tuneops?")
    return folder


def _materialised(folder: Path, target: Path, source: str) -> Path:
    """An adapter-only folder as plain merged weights with its tokenizer and family files, written once."""
    if (target / MATERIALISED_FILE).is_file():
        return target
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        load_saved_model(folder, merge=True).save_pretrained(work)
        for item in folder.iterdir():
            if item.is_file() and item.name not in (BASE_FILE, EXTRA_FILE) and not (work / item.name).exists():
                shutil.copy2(item, work / item.name)
        (work / MATERIALISED_FILE).write_text(json.dumps({
            "from": source, "base": json.loads((folder / BASE_FILE).read_text())}, indent=2))
        try:
            work.rename(target)  # atomic: another process materialising the same version may have won the race
        except OSError:
            if not (target / MATERIALISED_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- pinned bases


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub id (nothing is downloaded), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a value that is no repo id at all
        return None
    return Path(found).parent if isinstance(found, str) else None


def pin(base: str) -> dict[str, Any]:
    """What an adapter-only version records about ``model.base`` so that loading finds the very same weights."""
    from importlib.metadata import distribution

    if base in PACKAGED:
        packaged = PACKAGED[base]
        weights = packaged.weights()
        dist = distribution(packaged.distribution)
        root = Path(str(dist.locate_file(""))).resolve()
        relative = weights.resolve().relative_to(root).as_posix() if weights.resolve().is_relative_to(root) \
            else weights.name
        return {"kind": "package", "base": base, "package": packaged.distribution, "version": dist.version,
                "file": relative, "sha256": file_sha256(weights)}
    if base.startswith(REGISTERED):
        name, version, mv = registered_version(base)
        return {"kind": "registered", "base": f"{REGISTERED}{name}/{version}", "name": name, "version": version,
                "run_id": str(mv.run_id)}
    if Path(base).is_dir():
        return {"kind": "folder", "base": str(Path(base).resolve()), "sha256": folder_sha256(Path(base))}
    snapshot = _hub_snapshot(base)
    if snapshot is not None:
        return {"kind": "hub", "base": base, "sha256": folder_sha256(snapshot)}
    raise ConfigError(f"model.base '{base}' is neither a packaged model, a registered version, a local folder nor a "
                      "hub id in the Hugging Face cache, so an adapter trained on it cannot say which base it needs")


def _pin_key(pinned: dict[str, Any]) -> str:
    """What identifies a pinned base (two versions with equal keys load the same base tensors)."""
    return json.dumps({k: v for k, v in pinned.items() if k != "model_class"}, sort_keys=True)


_VERIFIED: dict[str, Path] = {}


def verified_base(pinned: dict[str, Any], what: str = "this model") -> Path:
    """The folder of the pinned base after checking it is the one the adapter was trained on: once per process
    and base (a failed check is not remembered: the next load checks again)."""
    key = _pin_key(pinned)
    found = _VERIFIED.get(key)
    if found is None:
        found = _VERIFIED[key] = _verify(pinned, what)
    return found


def forget_verified_bases() -> None:
    """Check every pinned base again at its next load (a process that changed a base folder on purpose)."""
    _VERIFIED.clear()


def _verify(pinned: dict[str, Any], what: str) -> Path:
    kind, base, expected = pinned.get("kind"), pinned.get("base"), pinned.get("sha256")
    if kind == "package":
        return _verified_package(pinned, what)
    if kind == "registered":
        return _verified_registered(pinned, what)
    if kind in ("folder", "hub"):
        folder = Path(base) if kind == "folder" else _hub_snapshot(base)
        where = f"folder {base}" if kind == "folder" else f"hub snapshot {base}"
        if folder is None or not folder.is_dir():
            raise BaseModelError(f"the base model of {what}, the {where}, is not on this machine (expected content "
                                 f"sha256 {expected}, found none); put that {where.split()[0]} back at {base} "
                                 "(or train the model again on a base this machine has)")
        found = folder_sha256(folder)
        if found != expected:
            raise BaseModelError(f"the base model of {what}, the {where}, is not the one it was trained on: content "
                                 f"sha256 {found}, expected {expected}; restore the files the adapter was trained "
                                 "on (or train the model again on this base)")
        return folder
    raise BaseModelError(f"the base model reference of {what} ({BASE_FILE}: kind {kind!r}) is not one this tuneops "
                         "knows; load it with the tuneops release that registered it, or train it again")


def _verified_package(pinned: dict[str, Any], what: str) -> Path:
    from importlib.metadata import distribution

    base, package, version, expected = pinned["base"], pinned["package"], pinned["version"], pinned["sha256"]
    fix = f"install it: pip install {package}=={version} (`make install` installs the packaged models)"
    packaged = PACKAGED.get(base)
    if packaged is None:
        raise BaseModelError(f"the base model of {what} is {base} ({package}=={version}, {pinned['file']} sha256 "
                             f"{expected}), which this tuneops does not package (found none); load it with the "
                             "tuneops release that registered it")
    try:
        installed = distribution(package).version
        weights = packaged.weights()
        if not weights.is_file():
            raise FileNotFoundError(weights)
    except (ImportError, FileNotFoundError):  # PackageNotFoundError is an ImportError
        raise BaseModelError(f"the base model of {what}, {base}, is not installed here (expected {package}=={version} "
                             f"with {pinned['file']} sha256 {expected}, found none); {fix}") from None
    found = file_sha256(weights)
    if found != expected:
        raise BaseModelError(f"the base model of {what}, {base}, is not the one it was trained on: "
                             f"{package}=={installed} has {pinned['file']} sha256 {found}, expected {expected} "
                             f"({package}=={version}); {fix}")
    return packaged.folder()


def _verified_registered(pinned: dict[str, Any], what: str) -> Path:
    from mlflow.exceptions import MlflowException

    from tuneops.registry.tracking import client

    name, version, expected = pinned["name"], pinned["version"], pinned["run_id"]
    try:
        found = str(client().get_model_version(name, version).run_id)
    except MlflowException:
        found = None
    if found != expected:
        now = f"found run {found}" if found else "found no such version"
        raise BaseModelError(f"the base model of {what} is the registered version {pinned['base']} (expected run "
                             f"{expected}, {now}); re-register the base as {name} v{version} from run {expected} in "
                             "this registry, or train the model again on a base this registry holds")
    return _trainable_folder(pinned["base"], name, version, expected)


# ----------------------------------------------------------------------------- writing an adapter-only folder


def plain_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the model itself for methods PEFT does not wrap)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _base_name(key: str) -> str:
    """A PEFT-wrapped model's state-dict key as the plain model names it (a wrapped layer's own weight)."""
    return key.replace(".base_layer.", ".").replace(".original_module.", ".")


def _adapter_keys(adapter_dir: Path) -> set[str]:
    """The plain-model keys the adapter file carries in full (a trained head)."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        return {k.removeprefix("base_model.model.") for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' loading report ("newly initialized ... you should TRAIN this model") is expected here: the head
    and the adapter come from the version's own files."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_base(model_class: Any, base_dir: Path, config: Any) -> tuple[Any, set[str]]:
    """The base checkpoint loaded into the version's architecture, and the keys the checkpoint did not fill."""
    with _quiet_transformers():
        model, info = model_class.from_pretrained(str(base_dir), config=config, output_loading_info=True)
    missing = set(info.get("missing_keys") or ()) | {
        k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys") or ()}
    return model, missing


def save_base_reference(model: Any, base: str | dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """Write what an adapter-only folder holds besides the adapter (already in ``model_dir/adapter``): the model's
    transformers config, the pinned base (``base``: ``model.base``, pinned now, or a :func:`pin` taken before), and
    the frozen weights the base checkpoint lacks. Returns the pin."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    plain = plain_model(model)
    config = copy.deepcopy(plain.config)
    config.architectures = [type(plain).__name__]
    config.save_pretrained(str(model_dir))
    pinned = {**(base if isinstance(base, dict) else pin(base)),
              "model_class": f"{type(plain).__module__}.{type(plain).__qualname__}"}
    fresh, missing = _load_base(type(plain), verified_base(pinned, f"the model in {model_dir}"), config)
    fresh_state = fresh.state_dict()
    from_checkpoint = {t.data_ptr() for k, t in fresh_state.items() if k not in missing}
    trained = {_base_name(k): t for k, t in plain.state_dict().items()}
    covered = _adapter_keys(model_dir / ADAPTER_DIR)
    extra = {k: trained[k].detach().cpu().clone().contiguous() for k in sorted(missing)
             if k in fresh_state and k in trained and k not in covered
             and fresh_state[k].data_ptr() not in from_checkpoint}  # not tied to a checkpoint weight
    if extra:
        save_file(extra, str(model_dir / EXTRA_FILE), metadata={"format": "pt"})
    (model_dir / BASE_FILE).write_text(json.dumps(pinned, indent=2))
    return pinned


# ----------------------------------------------------------------------------- loading


def _class_named(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _model_class(model_dir: Path, pinned: dict[str, Any] | None) -> Any:
    """The class to load a folder with when the caller names none: the one recorded at export, else the one its
    config.json names."""
    import transformers

    if pinned and pinned.get("model_class"):
        with contextlib.suppress(ImportError, AttributeError):
            return _class_named(pinned["model_class"])
    config = json.loads((model_dir / "config.json").read_text())
    return getattr(transformers, (config.get("architectures") or ["AutoModel"])[0], None) or transformers.AutoModel


_SHARED: dict[tuple, Any] = {}
_SHARED_LOCK = threading.Lock()


def _share_base_weights(model: Any, base_key: str, from_checkpoint: set[str]) -> None:
    """Point the model's checkpoint-loaded parameters at the tensors an earlier model on the same base holds.

    Only weights that came from the base checkpoint are shared (never a head the checkpoint lacks, never what an
    adapter adds); tied weights stay tied, since every reference to a replaced parameter is replaced. A model
    sharing them must not be moved, cast or merged in place (``.to()`` would change every model's weights).
    """
    with _SHARED_LOCK:
        swap: dict[int, Any] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if name not in from_checkpoint or id(param) in swap:
                continue
            key = (base_key, name, tuple(param.shape), str(param.dtype), str(param.device))
            kept = _SHARED.setdefault(key, param)
            if kept is not param:
                swap[id(param)] = kept
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and id(param) in swap:
                    module._parameters[name] = swap[id(param)]


def load_saved_model(model_dir: str | Path, model_class: Any = None, *, merge: bool = False,
                     share_base: bool = False) -> Any:
    """The model a saved folder holds, in eval mode, whatever its format (see the module's docstring).

    ``model_class`` is the family's transformers class (``AutoModelForSequenceClassification`` ...; None: the one
    the folder records). ``merge`` folds a mergeable adapter into the base weights in memory (for runtimes that
    need plain weights); unmerged, the model is what was trained: base + adapter. ``share_base`` lets unmerged
    adapter-only models on the same base share its weight tensors in this process (never when merging, which
    writes into the weights). Raises :class:`BaseModelError` when the pinned base is missing or differs.
    """
    from tuneops import methods

    model_dir = Path(model_dir)
    kind = folder_format(model_dir)
    if kind == MERGED:
        return (model_class or _model_class(model_dir, None)).from_pretrained(str(model_dir)).eval()
    method = methods.get(adapter_method(model_dir))
    if kind == BASE_AND_ADAPTER:
        base = (model_class or _model_class(model_dir / BASE_DIR, None)).from_pretrained(str(model_dir / BASE_DIR))
    else:
        from transformers import AutoConfig

        pinned = json.loads((model_dir / BASE_FILE).read_text())
        base_dir = verified_base(pinned, f"the model in {model_dir}")
        model_class = model_class or _model_class(model_dir, pinned)  # imported first: it may register its config
        base, missing = _load_base(model_class, base_dir, AutoConfig.from_pretrained(str(model_dir)))
        if (model_dir / EXTRA_FILE).is_file():
            from safetensors.torch import load_file

            extra = load_file(str(model_dir / EXTRA_FILE))
            unexpected = base.load_state_dict(extra, strict=False).unexpected_keys
            if unexpected:
                raise BaseModelError(f"{model_dir / EXTRA_FILE} holds weights this model does not have "
                                     f"({unexpected[:3]}); load it with the tuneops release that registered it")
        if share_base and not merge:
            _share_base_weights(base, _pin_key(pinned), set(base.state_dict()) - missing)
    model = method.load(method.adapt_base(base), model_dir / ADAPTER_DIR)
    if merge and method.mergeable:
        model = model.merge_and_unload()
    return model.eval()
