"""Do tuneops' defaults work on data nobody tuned them for? A minimal config against a search, per dataset.

Three single-label datasets derived from the repository's data:
  demo     the BANKING77 demo subset of configs/banking77_lora.yaml (30 intents, 100 queries each)
  small    the same 30 intents at 15 queries each (450 rows: "a few hundred")
  nlupp    NLU++ messages (banking and hotels) that carry exactly one intent, intents with >= 10 such messages

For each dataset, in a fresh TUNEOPS_HOME:
  1. `tuneops train` on the minimal config: the data section (path, columns, row selection), the registry name,
     and nothing else: every training knob is tuneops' default;
  2. `tuneops tune` on the same data: a grid of at most 8 trials (--trials N < 8: N of them at random),
     chosen on the validation split; then `tuneops train` of the best trial's config, scored on the test split;
  3. the TF-IDF + logistic-regression baseline every classification run scores on the same test rows;
  4. (--lora) the minimal config with `training.method: lora` (LoRA's own default learning rate, 2e-3): the
     evidence for the default method.
Printed: one table (dataset x minimal / best search / baseline, test accuracy) and JSON lines.

    .venv/bin/python bench/defaults_study.py [--only demo,small,nlupp] [--trials 8] [--no-lora]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The grid around the classifier defaults (full fine-tuning at lr 1e-4, 10 epochs with early stopping, label
# smoothing 0.1): half and twice the learning rate, shorter and longer training, hard or smoothed targets. The
# minimal config is not a point of it. (A trial's config is the validated minimal one with these keys overridden.)
SPACE = {"training.learning_rate": [5e-5, 2e-4], "training.epochs": [5, 15], "training.label_smoothing": [0.0, 0.1]}


def datasets(folder: Path) -> dict[str, dict[str, Any]]:
    """Each dataset's minimal config sections (data + validation the data itself needs)."""
    import pandas as pd

    demo = yaml.safe_load((ROOT / "configs/banking77_lora.yaml").read_text())["data"]
    banking = {"path": str(ROOT / "data/banking77/train.csv"), "text_column": "text", "label_column": "category",
               "select_labels": demo["select_labels"]}
    rows = []
    for domain in ("banking", "hotels"):
        frame = pd.read_json(ROOT / f"data/nlupp/{domain}.jsonl", lines=True)
        one = frame[frame.intents.map(len) == 1]
        rows.append(pd.DataFrame({"message": one.text, "intent": one.intents.map(lambda x: x[0])}))
    nlupp = pd.concat(rows, ignore_index=True).drop_duplicates("message")
    counts = nlupp.intent.value_counts()
    nlupp = nlupp[nlupp.intent.isin(counts[counts >= 10].index)]
    nlupp.to_csv(folder / "nlupp_single_intent.csv", index=False)
    return {
        "demo": {"data": {**banking, "max_rows_per_label": 100}},
        "small": {"data": {**banking, "max_rows_per_label": 15}, "validation": {"min_rows_per_class": 10}},
        "nlupp": {"data": {"path": str(folder / "nlupp_single_intent.csv"), "text_column": "message",
                           "label_column": "intent"}, "validation": {"min_rows_per_class": 10}},
    }


def grid(trials: int) -> dict[str, Any]:
    combos = list(itertools.product(*SPACE.values()))
    if trials >= len(combos):
        return {"strategy": "grid", "space": SPACE}
    return {"strategy": "random", "space": SPACE, "trials": trials, "seed": 0}


def tuneops(home: Path, *argv: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env["TUNEOPS_HOME"] = str(home)
    start = time.perf_counter()
    # a gate refusal (e.g. not above the baseline) exits non-zero after the test scores are logged
    subprocess.run([sys.executable, "-m", "tuneops.cli", *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def last_run(home: Path, name: str) -> dict[str, Any]:
    """The newest training run's metrics, and its training split's size."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"attributes.run_name = '{name}'", order_by=["attributes.start_time DESC"])
    if not runs or "test_accuracy" not in runs[0].data.metrics:
        sys.exit(f"no finished training run named {name} in {home}: see its log")
    return {**runs[0].data.metrics, "train_rows": int(runs[0].data.params.get("split.train.rows", 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="demo,small,nlupp", help="comma-separated datasets (default all three)")
    parser.add_argument("--trials", type=int, default=8, help="trials per search, at most 8 (default 8: the grid)")
    parser.add_argument("--no-lora", dest="lora", action="store_false", help="skip the minimal config with "
                        "method: lora")
    args = parser.parse_args()
    if not 1 <= args.trials <= 8:
        parser.error("--trials must be between 1 and 8")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp(prefix="tuneops-defaults-"))
    table = []
    for name, sections in datasets(folder).items():
        if name not in args.only.split(","):
            continue
        home = folder / name
        minimal = {**sections, "registry": {"model_name": f"defaults-{name}"}}
        minimal_path = folder / f"{name}_minimal.yaml"
        minimal_path.write_text(yaml.safe_dump(minimal, sort_keys=False))
        seconds_minimal = tuneops(home, "train", str(minimal_path))
        m = last_run(home, f"defaults-{name}")

        search_path = folder / f"{name}_search.yaml"
        search_path.write_text(yaml.safe_dump({**minimal, "search": grid(args.trials)}, sort_keys=False))
        best_path = folder / f"{name}_best.yaml"
        seconds_search = tuneops(home, "tune", str(search_path), "--output", str(best_path))
        best_config = yaml.safe_load(best_path.read_text())
        chosen = {k: best_config["training"][k.split(".", 1)[1]] for k in SPACE}
        seconds_best = tuneops(home, "train", str(best_path))
        b = last_run(home, f"defaults-{name}")
        lora = None
        if args.lora:
            lora_path = folder / f"{name}_minimal_lora.yaml"
            lora_path.write_text(yaml.safe_dump({**minimal, "training": {"method": "lora"}}, sort_keys=False))
            tuneops(home, "train", str(lora_path))
            lora = last_run(home, f"defaults-{name}")["test_accuracy"]
        row = {"dataset": name, "train_rows": m["train_rows"], "minimal": m["test_accuracy"],
               "minimal_epochs_run": m.get("epochs_run"), "best_search": b["test_accuracy"], "best_trial": chosen,
               "minimal_lora": lora,
               "baseline": m["baseline_test_accuracy"], "seconds": {"minimal": seconds_minimal,
                                                                     "search": seconds_search, "best": seconds_best}}
        table.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{'dataset':<8}{'minimal config':>16}{'best of search':>16}{'TF-IDF + LR':>13}{'minimal, LoRA':>15}"
          "  verdict")
    for r in table:
        near = r["minimal"] >= r["best_search"] - 0.01
        above = r["minimal"] > r["baseline"]
        lora = f"{r['minimal_lora']:>15.4f}" if r["minimal_lora"] is not None else f"{'-':>15}"
        print(f"{r['dataset']:<8}{r['minimal']:>16.4f}{r['best_search']:>16.4f}{r['baseline']:>13.4f}{lora}  "
              f"{'within 1 point' if near else 'MORE than 1 point'} of the search, "
              f"{'above' if above else 'NOT above'} the baseline; best trial {r['best_trial']}")
    print(f"configs and homes in {folder}")


if __name__ == "__main__":
    main()
