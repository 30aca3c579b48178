"""Batch-scoring benchmark: `tuneops predict`'s library path against a plain transformers pipeline, side by side.

    .venv/bin/python bench/batch_scoring.py                       # the champion of configs/banking77_lora.yaml
    .venv/bin/python bench/batch_scoring.py --rows 2000 --memory-rows 2000,20000   # reduced, on a busy machine
    .venv/bin/python bench/batch_scoring.py --train --set training.epochs=1 --set data.max_rows_per_label=60

The model is the registered champion of ``--config`` in the store of ``TUNEOPS_HOME`` / ``MLFLOW_TRACKING_URI``
(``--version`` names another; ``--train`` first runs `tuneops train` on the config with the ``--set`` overrides).
One run measures, on the same machine and the same rows:

1. each inference runtime's agreement with fp32 on the version's validation split and its speed there
   (`tuneops runtime-check`; recorded on the version);
2. rows/s on ``--rows`` BANKING77 texts (data/banking77/train.csv, repeated): a plain
   ``transformers.pipeline("text-classification")`` over the same merged model (batch size as ours, truncation
   at model.max_length; texts in memory, no file I/O) against `tuneops predict`'s path (``predict_file``: read
   the CSV in chunks, score, write the predictions CSV; model loading included) with fp32 and with the fastest
   runtime that passed its check;
3. peak RSS of a `tuneops predict` subprocess (os.wait4's ru_maxrss) at each of ``--memory-rows``, with the best
   runtime: bounded memory means it does not grow with the input.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tuneops import settings  # noqa: E402

settings.configure_environment()


def texts_file(rows: int, folder: Path) -> Path:
    """BANKING77 texts repeated to ``rows`` rows, as a CSV with a text column."""
    texts = pd.read_csv(ROOT / "data/banking77/train.csv").text
    repeated = pd.DataFrame({"text": [texts.iloc[i % len(texts)] for i in range(rows)]})
    path = folder / f"texts-{rows}.csv"
    repeated.to_csv(path, index=False)
    return path


def pipeline_rows_per_s(model_dir: str, texts: list[str], batch_size: int, max_length: int) -> float:
    import torch
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=torch.device("cpu"),
                        batch_size=batch_size)
    classify(texts[:batch_size], truncation=True, max_length=max_length)  # warm-up
    began = time.perf_counter()
    out = classify(texts, truncation=True, max_length=max_length)
    seconds = time.perf_counter() - began
    assert len(out) == len(texts)
    return len(texts) / seconds


def predict_rows_per_s(cfg, source: Path, version: str, runtime: str, out: Path) -> float:  # noqa: ANN001
    from tuneops.serving.scoring import predict_file

    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"runtime": runtime})})
    began = time.perf_counter()
    written = predict_file(cfg, str(source), str(out), version=version, progress=lambda n, s: None)
    seconds = time.perf_counter() - began
    assert written.runtime == runtime and written.rows == len(pd.read_csv(source))
    return written.rows / seconds


def peak_rss_mib(config: str, sets: list[str], source: Path, version: str, runtime: str, out: Path) -> float:
    """Peak resident memory of `tuneops predict` in its own process (Linux ru_maxrss is in KiB)."""
    command = [sys.executable, "-m", "tuneops.cli", "predict", "--config", config, "--input", str(source),
               "--output", str(out), "--version", version, "--set", f"serving.runtime={runtime}"]
    for item in sets:
        command += ["--set", item]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"tuneops predict failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/banking77_lora.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--version", help="registered version (default: the champion)")
    parser.add_argument("--train", action="store_true", help="train the config first (`tuneops train`)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--memory-rows", default="20000,200000", help="comma-separated input sizes for peak RSS")
    args = parser.parse_args()

    if args.train:
        sets = [x for s in args.set for x in ("--set", s)]
        subprocess.run([sys.executable, "-m", "tuneops.cli", "train", args.config, *sets], check=True, cwd=ROOT)

    from tuneops.config import load_config
    from tuneops.serving import runtime_check, runtimes
    from tuneops.serving.scoring import resolve_version

    cfg = load_config(ROOT / args.config, args.set)
    version = resolve_version(cfg.registry.model_name, args.version)
    print(f"model {cfg.registry.model_name} v{version}; {os.cpu_count()} CPUs; torch threads "
          f"{__import__('torch').get_num_threads()}")

    print("\n## Runtimes against fp32 on the validation split")
    results = runtime_check.check(cfg, version, list(runtimes.RUNTIMES))
    print("| runtime | same label | max confidence diff | rows | rows/s | vs fp32 | check |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.runtime} | {r.agreement:.2%} | {r.max_confidence_diff:.4f} | {r.rows} | {r.rows_per_s:.1f} | "
              f"{r.rows_per_s / r.reference_rows_per_s:.2f}x | {'passed' if r.passed else 'FAILED'} |")
    best = runtime_check.choose(cfg, version, runtimes.AUTO)
    print(f"fastest verified runtime (serving.runtime: auto): {best}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = texts_file(args.rows, folder)
        local = runtime_check.download(cfg.registry.model_name, version, folder / "model")
        texts = pd.read_csv(source).text.tolist()
        print(f"\n## Batch scoring, {args.rows:,} rows")
        baseline = pipeline_rows_per_s(str(Path(local) / "artifacts" / "model"), texts, cfg.serving.scoring_batch_size,
                                       cfg.model.max_length)
        print("| path | rows/s | vs pipeline |\n|---|---|---|")
        print(f"| transformers.pipeline (fp32) | {baseline:.1f} | 1.00x |")
        for runtime in dict.fromkeys(["fp32", best]):
            rate = predict_rows_per_s(cfg, source, version, runtime, folder / f"out-{runtime}.csv")
            print(f"| tuneops predict, {runtime} | {rate:.1f} | {rate / baseline:.2f}x |", flush=True)

        print(f"\n## Peak memory of `tuneops predict` ({best}, chunks of {cfg.serving.scoring_chunk_rows} rows)")
        print("| rows | peak RSS |\n|---|---|")
        for rows in [int(x) for x in args.memory_rows.split(",") if x]:
            big = texts_file(rows, folder)
            mib = peak_rss_mib(str(ROOT / args.config), args.set, big, version, best, folder / f"mem-{rows}.csv")
            print(f"| {rows:,} | {mib:.0f} MiB |", flush=True)
            big.unlink()


if __name__ == "__main__":
    main()
