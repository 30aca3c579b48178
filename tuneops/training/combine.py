"""Combine LoRA adapters trained on different data into one candidate (PEFT's weighted adapter combination).

The adapters come from registered versions (each registered LoRA model carries its adapter in PEFT
format). PEFT combines the low-rank updates with ``combination_type="cat"``, which makes the combined
update exactly the weighted sum of the sources' updates. PEFT refuses adapters that carry their own
classification head (``modules_to_save``), so the heads are split off, combined here with the same
(normalised) weights, and written back into the combined adapter. The candidate is an adapter-only folder
on the sources' base, like a trained LoRA version (:mod:`tuneops.training.model_loading`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneops.errors import TrainingError
from tuneops.training.model_loading import BASE_FILE, METHOD_FILE
from tuneops.training.trainer import TrainResult

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig

HEAD_PREFIX = "base_model.model.classifier."


def fetch_adapter(source: str, into: Path) -> tuple[Path, dict[str, str]]:
    """Download a registered version ('NAME/VERSION' or 'NAME@ALIAS') and return its adapter folder and tags."""
    import mlflow

    from tuneops.errors import RegistryError
    from tuneops.registry.tracking import client

    name, sep, ref = source.partition("@") if "@" in source else source.rpartition("/")
    if not sep or not name or not ref:
        raise TrainingError(f"adapter source '{source}' is not 'NAME/VERSION' or 'NAME@ALIAS'")
    try:
        mv = (client().get_model_version_by_alias(name, ref) if "@" in source
              else client().get_model_version(name, ref))
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"adapter source '{source}' is not in the registry; list its versions in the MLflow "
                            "UI") from None
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=str(into)))
    found = [p.parent for p in local.rglob("adapter_model.safetensors")]
    if mv.tags.get("tuneops.method") != "lora" or not found:
        raise TrainingError(f"{name} v{mv.version} was trained with method '{mv.tags.get('tuneops.method')}'; only "
                            "LoRA adapters can be combined")
    return found[0], dict(mv.tags)


def _without_head(adapter: Path, into: Path) -> dict[str, Any]:
    """A copy of the adapter without its classification head (PEFT cannot combine those); returns the head."""
    from safetensors.torch import load_file, save_file

    into.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    head = {k.removeprefix(HEAD_PREFIX): v for k, v in weights.items() if k.startswith(HEAD_PREFIX)}
    save_file({k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIX)},
              str(into / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["modules_to_save"] = None
    config["task_type"] = None  # a sequence-classification task type would add the head back
    (into / "adapter_config.json").write_text(json.dumps(config))
    return head


def combine(cfg: TuneopsConfig, sources: list[str], weights: list[float], out_dir: Path) -> TrainResult:
    """The weighted combination of the sources' adapters (and heads), exported as an adapter-only folder."""
    import time

    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    from tuneops.families.classification.pooling import MODEL_TYPE, classifier_class
    from tuneops.training.base_models import resolve as resolve_base
    from tuneops.training.model_loading import ADAPTER_DIR, pin, save_base_reference

    if len(sources) < 2 or len(sources) != len(weights):
        raise TrainingError(f"combining needs at least two sources and one weight per source (got {len(sources)} "
                            f"sources, {len(weights)} weights)")
    if any(w <= 0 for w in weights):
        raise TrainingError(f"combination weights must be positive (got {weights})")
    start = time.perf_counter()
    current = pin(cfg.model.base)
    work = out_dir / "sources"
    adapters, heads, labels, source_dirs = [], [], None, []
    for i, source in enumerate(sources):
        adapter, tags = fetch_adapter(source, work / f"download-{i}")
        source_dirs.append(adapter)
        if tags.get("tuneops.base_model") != cfg.model.base:
            raise TrainingError(f"{source} was trained on base model {tags.get('tuneops.base_model')}, not "
                                f"{cfg.model.base}; adapters of different base models cannot be combined")
        model_config = AutoConfig.from_pretrained(str(adapter.parent))
        pooling = "mean" if model_config.model_type == MODEL_TYPE else "cls"
        if pooling != cfg.model.pooling:  # its head was trained on the other pooling's features
            raise TrainingError(f"{source} was trained with model.pooling: {pooling}, this config has "
                                f"model.pooling: {cfg.model.pooling}; set model.pooling: {pooling} to combine it")
        source_labels = [model_config.id2label[i] for i in range(len(model_config.id2label))]
        if labels is not None and source_labels != labels:
            raise TrainingError(f"{source} predicts other labels than {sources[0]}; combined adapters need the same "
                                "label set")
        labels = source_labels
        _require_same_base(source, adapter.parent, current)
        heads.append(_without_head(adapter, work / f"adapter-{i}"))
        adapters.append(f"source{i}")
    assert labels is not None

    base = resolve_base(cfg.model.base)
    model = classifier_class(cfg.model.pooling).from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model.config.tuneops_max_length = cfg.model.max_length
    params = sum(p.numel() for p in model.parameters())
    peft_model = PeftModel.from_pretrained(model, str(work / "adapter-0"), adapter_name=adapters[0])
    for i, name in enumerate(adapters[1:], start=1):
        peft_model.load_adapter(str(work / f"adapter-{i}"), adapter_name=name)
    peft_model.add_weighted_adapter(adapters, weights, adapter_name="combined", combination_type="cat")
    total = sum(weights)
    head = {k: sum(w / total * h[k] for w, h in zip(weights, heads, strict=True)) for k in heads[0]}

    model_dir = out_dir / "model"
    _save_combined(peft_model, head, json.loads((source_dirs[0] / "adapter_config.json").read_text()),
                   model_dir / ADAPTER_DIR, sources, weights)
    save_base_reference(peft_model, cfg.model.base, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(model_dir)
    _check_reloads(peft_model, head, model_dir, tokenizer)
    (model_dir / "tuneops_config.json").write_text(cfg.model_dump_json(indent=2))
    (model_dir / "tuneops_combination.json").write_text(json.dumps(
        {"sources": sources, "weights": weights, "combination_type": "cat"}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    return TrainResult(model_dir=str(model_dir), labels=labels, train_seconds=seconds, eval_seconds=0.0,
                       trainable_params=0, total_params=params, best_validation={})


def _save_combined(peft_model: Any, head: dict[str, Any], source_config: dict[str, Any], adapter_dir: Path,
                   sources: list[str], weights: list[float]) -> None:
    """The combined LoRA adapter in PEFT's format with the combined head as its trained module (like a source's:
    the source's task type and modules_to_save), and the method file loading reads."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    adapter_dir.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model, adapter_name="combined")
    state.update({f"{HEAD_PREFIX}{k}": v for k, v in head.items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_model.peft_config["combined"].save_pretrained(str(adapter_dir))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config.update(task_type=source_config.get("task_type"), modules_to_save=source_config.get("modules_to_save"))
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (adapter_dir / METHOD_FILE).write_text(json.dumps({
        "method": "lora", "settings": None, "combined_from": sources, "weights": weights,
        "r": config.get("r"), "lora_alpha": config.get("lora_alpha")}, indent=2))


def _require_same_base(source: str, model_dir: Path, current: dict[str, Any]) -> None:
    """An adapter-only source must have been trained on the very base this config pins (same weights' hash)."""
    recorded_file = model_dir / BASE_FILE
    if not recorded_file.is_file():  # merged weights (registered before adapter-only versions): the tags decide
        return
    recorded = json.loads(recorded_file.read_text())
    if (recorded.get("sha256"), recorded.get("run_id")) != (current.get("sha256"), current.get("run_id")):
        found = current.get("sha256") or current.get("run_id")
        raise TrainingError(f"{source} was trained on {recorded.get('base')} "
                            f"({recorded.get('sha256') or recorded.get('run_id')}), but {current.get('base')} is "
                            f"{found} here; adapters of different base weights cannot be combined")


def _check_reloads(peft_model: Any, head: dict[str, Any], model_dir: Path, tokenizer: Any) -> None:
    """The written folder, loaded as serving loads it, gives the combined model's logits."""
    import torch

    from tuneops.training.model_loading import load_saved_model, plain_model

    peft_model.set_adapter("combined")
    plain_model(peft_model).classifier.load_state_dict(head)
    reloaded = load_saved_model(model_dir, type(plain_model(peft_model)))
    enc = dict(tokenizer(["where is my new card", "the exchange rate you used was wrong"], padding=True,
                         return_tensors="pt"))
    with torch.inference_mode():
        expected, got = peft_model.eval()(**enc).logits, reloaded(**enc).logits
    gap = float((expected - got).abs().max())
    if gap > 1e-4:
        raise TrainingError(f"the combined adapter written to {model_dir} does not reload to the combined model "
                            f"(largest logit difference {gap:.2e}); nothing was registered. This is a bug: report it")
