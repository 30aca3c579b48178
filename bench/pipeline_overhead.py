"""How much of a training run is the pipeline, not the model?

Runs `tuneops train CONFIG` exactly as a user does (a new process, local Prefect and SQLite
MLflow under a fresh TUNEOPS_HOME), twice:
  run 1 "cold": empty working folder (databases created, no champion);
  run 2 "warm": same folder (the champion from run 1 is re-scored on the same test split).
For each it prints the wall time of the command, the compute the flow recorded (training loop
with per-epoch validation, reading back the restored epoch, test evaluation, champion re-scoring), and the
rest: process start, imports, Prefect and MLflow, data validation, model export and I/O. The rest is split at
the MLflow run the flow opens (its start and end times): start-up before it (the process, imports, the local
Prefect server, the databases), the flow's own work inside it besides compute (validation, split, model
loading, export, the baseline, the gate, registration), and what follows it (the summary, the exit).
Goal (issue 16, after issue 2's 10%): the rest is at most 5% of wall time, cold and warm.

    .venv/bin/python bench/pipeline_overhead.py [CONFIG] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/banking77_lora.yaml")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tuneops-bench-")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME")}
    env["TUNEOPS_HOME"] = home
    command = [sys.executable, "-m", "tuneops.cli", "train", args.config, *(f"--set={s}" for s in args.set)]
    walls, started = [], []
    for _ in range(2):
        started.append(time.time())
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)

    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    from tuneops import settings

    settings.configure_environment()
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time ASC"],
                              output_format="list")
    print(f"\n=== pipeline overhead: {args.config} {' '.join(args.set)} ===")
    print(f"{'':34}{'cold run':>12}{'warm run':>12}")
    print(f"{'wall time of tuneops train':34}" + "".join(f"{w:11.1f}s" for w in walls))
    parts = ["train", "validation", "test", "champion_rescore"]
    computes = []
    for part in parts:
        values = [r.data.metrics.get(f"compute_{part}_seconds", 0.0) for r in runs]
        print(f"{'  compute: ' + part:34}" + "".join(f"{v:11.1f}s" for v in values))
    computes = [sum(r.data.metrics.get(f"compute_{p}_seconds", 0.0) for p in parts) for r in runs]
    print(f"{'training + evaluation':34}" + "".join(f"{c:11.1f}s" for c in computes))
    print(f"{'the rest':34}" + "".join(f"{w - c:11.1f}s" for w, c in zip(walls, computes, strict=True)))
    startup = [r.info.start_time / 1000 - t for r, t in zip(runs, started, strict=True)]
    inside = [(r.info.end_time - r.info.start_time) / 1000 - c for r, c in zip(runs, computes, strict=True)]
    after = [t + w - r.info.end_time / 1000 for r, t, w in zip(runs, started, walls, strict=True)]
    for label, values in (("  start-up, before the run", startup), ("  in the run, besides compute", inside),
                          ("  after the run", after)):
        print(f"{label:34}" + "".join(f"{v:11.1f}s" for v in values))
    print(f"{'the rest, share of wall time':34}" + "".join(f"{(w - c) / w:12.1%}" for w, c in
                                                          zip(walls, computes, strict=True)) + "   goal <= 5%")
    print(f"{'test accuracy':34}" + "".join(f"{r.data.metrics['test_accuracy']:12.4f}" for r in runs))


if __name__ == "__main__":
    main()
