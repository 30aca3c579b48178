"""bf16 + DeepSpeed ZeRO-3 on a GPU, through the engine's own training path (no Prefect, no MLflow).

The variants train MiniLM on all of BANKING77 with the settings of configs/banking77_lora_full.yaml, each
through ``tuneops.training.trainer`` exactly as the fine-tune task runs it: a single process in fp32 (the
baseline), and the DeepSpeed launch (torchrun + ``tuneops.training.worker``) with ZeRO-3 and bf16, for LoRA
and full fine-tuning. Each exported model is reloaded the way serving loads it and scored on the test split.

    python bench/gpu_check.py prepare .gpu     # here: the project's split of BANKING77, MiniLM as fp16 files
    python bench/gpu_check.py run .gpu OUT      # on the GPU machine: one JSON line per variant, OUT/gpu_check.json

GPU_CHECK_VARIANTS=a,b picks variants; GPU_CHECK_EPOCHS overrides the epochs (6).

MiniLM travels as fp16 safetensors (half the size; the transfer to the GPU machine is capped), so every
variant, the baseline included, starts from the same fp16-rounded weights.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs/banking77_lora_full.yaml"
ZERO3 = str(ROOT / "configs/deepspeed/zero3.json")
EPOCHS = 6  # half the CPU config's 12, to fit the GPU machine's lease; the same for every variant
VARIANTS = {
    "lora-fp32-single": {"method": "lora", "precision": "fp32", "distributed": {"launcher": "none"}},
    "lora-bf16-zero3": {"method": "lora", "precision": "bf16",
                        "distributed": {"launcher": "deepspeed", "processes": 1, "deepspeed_config": ZERO3}},
    "full-bf16-zero3": {"method": "full", "precision": "bf16", "learning_rate": 0.0001,
                        "distributed": {"launcher": "deepspeed", "processes": 1, "deepspeed_config": ZERO3}},
}


def prepare(work: Path) -> None:
    """Split BANKING77 with the project's split code and write MiniLM's weights in fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    from tuneops.config import load_config
    from tuneops.data.splits import split_frame
    from tuneops.tasks.data import load_dataset
    from tuneops.training.base_models import resolve as resolve_base

    cfg = load_config(CONFIG)
    splits = split_frame(load_dataset.fn(cfg.data), cfg.split_data(), cfg.split, work / "splits")
    (work / "splits.json").write_text(json.dumps(
        {"paths": {k: str(Path(v).relative_to(work)) for k, v in splits.paths.items()}, "sizes": splits.sizes,
         "fingerprints": splits.fingerprints, "class_counts": splits.class_counts}))
    base = Path(resolve_base(cfg.model.base))
    out = work / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (base / name).is_file():
            (out / name).write_bytes((base / name).read_bytes())
    weights = {k: v.to(torch.float16) for k, v in load_file(base / "model.safetensors").items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    print(f"prepared {work}: splits {splits.sizes}, MiniLM in fp16")


def variant_config(name: str, work: Path) -> TuneopsConfig:
    """configs/banking77_lora_full.yaml with the variant's training settings, on the fp16 MiniLM copy."""
    import yaml

    from tuneops.config import TuneopsConfig

    raw = yaml.safe_load(CONFIG.read_text())
    raw["model"]["base"] = str(work / "minilm")
    training = VARIANTS[name]
    raw["training"].update({**training, "distributed": {**raw["training"]["distributed"], **training["distributed"]}})
    raw["training"]["epochs"] = int(os.environ.get("GPU_CHECK_EPOCHS", EPOCHS))
    if training["method"] != "lora":
        raw["training"].pop("lora")
    return TuneopsConfig.model_validate(raw)


def run(work: Path, out: Path) -> None:
    """Train every variant through tuneops.training.trainer and score its exported model on the test split."""
    import pandas as pd
    import torch

    from tuneops.data.splits import SplitResult
    from tuneops.evaluation.metrics import classification_metrics
    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.trainer import launch_distributed, train

    os.environ.setdefault("TUNEOPS_HOME", str(work / "home"))
    raw = json.loads((work / "splits.json").read_text())
    raw["paths"] = {k: str(work / v) for k, v in raw["paths"].items()}
    splits = SplitResult(**raw)
    test = pd.read_parquet(splits.paths["test"])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    results = []
    only = os.environ.get("GPU_CHECK_VARIANTS")
    for name in VARIANTS:
        if only and name not in only.split(","):
            continue
        cfg = variant_config(name, work)
        run_dir = work / "runs" / name
        start = time.perf_counter()
        if cfg.training.distributed.launcher == "none":
            result = train(cfg, splits, run_dir)
        else:
            result = launch_distributed(cfg, splits, run_dir, "")
        wall = time.perf_counter() - start
        predicted = Classifier(result.model_dir, max_length=cfg.model.max_length).predict(
            test[cfg.data.text_column].astype(str).tolist()).labels
        scores = classification_metrics(test[cfg.data.label_column].astype(str).tolist(), predicted)
        row = {"variant": name, "test_accuracy": round(scores["accuracy"], 4),
               "test_macro_f1": round(scores["macro_f1"], 4),
               "best_validation_accuracy": round(result.best_validation["accuracy"], 4),
               "epochs_run": result.epochs_run, "train_seconds": round(result.train_seconds, 1),
               "samples_per_second": round(splits.sizes["train"] * result.epochs_run / result.train_seconds, 1),
               "wall_seconds": round(wall, 1), "trainable_params": result.trainable_params}
        results.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("prepare", "run"):
        sys.exit(__doc__)
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]).resolve())
    else:
        run(Path(sys.argv[2]).resolve(), Path(sys.argv[3] if len(sys.argv) > 3 else sys.argv[2]).resolve())
