"""Bottleneck adapters against LoRA on the demo task, side by side in one run.

Both train with the engine exactly as `tuneops train` does (tuneops.training.trainer.train: the Trainer, best epoch
restored, the export and its reload check), on the same split of the 30 demo intents at up to 100 rows each (the data
and split of configs/banking77_adapter.yaml), each with its shipped model and training settings:
configs/banking77_lora.yaml (LoRA r 16 on query/key/value/dense, merged for export) and
configs/banking77_adapter.yaml (Houlsby bottleneck adapters, reduction factor 16, exported as base + adapter).
Then both exported folders are loaded as serving loads them (tuneops.families.classification.predictor.Classifier) and
timed in
alternating rounds, so a busy machine slows both alike:

  test accuracy        on the held-out test split (the gate's number)
  trainable params     adapters plus the classification head
  train samples/s      training rows x epochs / seconds of the training loop (per-epoch validation included)
  ms per batch         one batch of 32 test texts, median over the test split's batches and rounds
  ms per query         one text at a time, median over 64 texts and rounds

    .venv/bin/python bench/adapters.py [--epochs N] [--rounds 3]

No MLflow run and no Prefect: a temporary TUNEOPS_HOME holds the checkpoints and exports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = {"lora": ROOT / "configs/banking77_lora.yaml", "bottleneck": ROOT / "configs/banking77_adapter.yaml"}
BATCH, QUERIES = 32, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=None, help="override both configs' training.epochs")
    parser.add_argument("--rounds", type=int, default=3, help="alternating latency rounds per model")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    os.environ["TUNEOPS_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from tuneops.config import load_config
    from tuneops.data.rows import select_subset
    from tuneops.data.splits import split_frame
    from tuneops.data.storage import read_dataset
    from tuneops.evaluation.metrics import classification_metrics
    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.trainer import train

    overrides = [f"training.epochs={args.epochs}"] if args.epochs else []
    cfgs = {name: load_config(path, overrides) for name, path in CONFIGS.items()}
    # The demo (banking77_lora.yaml) trains on a few rows per intent; the comparison keeps the adapter config's
    # 100-per-intent subset and split for both, with each method's own model and training settings.
    first = cfgs["bottleneck"]
    cfgs["lora"] = cfgs["lora"].model_copy(update={"data": first.data, "split": first.split})
    frame = select_subset(read_dataset(str(ROOT / first.data.path)), first.data)
    splits = split_frame(frame, first.split_data(), first.split, work / "splits")
    import pandas as pd

    test = pd.read_parquet(splits.paths["test"])
    texts, truth = test[first.data.text_column].astype(str).tolist(), test[first.data.label_column].astype(str).tolist()
    train_rows = len(pd.read_parquet(splits.paths["train"]))
    print(f"demo task: {train_rows} training rows, {len(test)} test rows, {torch.get_num_threads()} threads",
          flush=True)

    rows: dict[str, dict[str, float]] = {}
    models: dict[str, Classifier] = {}
    for name, cfg in cfgs.items():
        print(f"training {name} ({cfg.training.epochs:g} epochs) ...", flush=True)
        result = train(cfg, splits, work / name)
        assert result is not None
        models[name] = Classifier(result.model_dir, max_length=cfg.model.max_length, batch_size=BATCH)
        predicted = models[name].predict(texts).labels
        rows[name] = {"accuracy": classification_metrics(truth, predicted)["accuracy"],
                      "trainable": result.trainable_params, "total": result.total_params,
                      "samples_s": train_rows * result.epochs_run / result.train_seconds,
                      "train_s": result.train_seconds, "batch_ms": [], "query_ms": []}
        print(f"  {name}: test accuracy {rows[name]['accuracy']:.4f}, {result.train_seconds:.0f} s training",
              flush=True)

    batches = [texts[i:i + BATCH] for i in range(0, len(texts) - BATCH + 1, BATCH)]
    for _ in range(args.rounds):
        for name, model in models.items():  # alternate, so load on the machine hits both alike
            model.predict(texts[:BATCH])  # warm-up
            for batch in batches:
                start = time.perf_counter()
                model.predict(batch)
                rows[name]["batch_ms"].append((time.perf_counter() - start) * 1000)
            for text in texts[:QUERIES]:
                start = time.perf_counter()
                model.predict([text])
                rows[name]["query_ms"].append((time.perf_counter() - start) * 1000)

    print()
    print("| method | test accuracy | trainable params | train samples/s | ms per batch of 32 | ms per query |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.4f} | {r['trainable']:,} of {r['total']:,} | {r['samples_s']:.1f} | "
              f"{statistics.median(r['batch_ms']):.1f} | {statistics.median(r['query_ms']):.2f} |")
    b, lo = rows["bottleneck"], rows["lora"]
    print(f"\nbottleneck / LoRA: accuracy {b['accuracy'] - lo['accuracy']:+.4f}, trainable params "
          f"{b['trainable'] / lo['trainable']:.2f}x, train samples/s {b['samples_s'] / lo['samples_s']:.2f}x, "
          f"ms per batch {statistics.median(b['batch_ms']) / statistics.median(lo['batch_ms']):.2f}x, ms per query "
          f"{statistics.median(b['query_ms']) / statistics.median(lo['query_ms']):.2f}x")


if __name__ == "__main__":
    main()
