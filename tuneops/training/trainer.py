"""The one training loop of every task family: the transformers Trainer (and PEFT for adapter methods).

Plain functions, no Prefect: the fine-tune task calls them in-process, and the workers of a distributed
launch (tuneops/training/worker.py) call them without paying for an orchestration import. A family
(tuneops/families/) supplies a :class:`TrainingPlan`; checkpoints, their S3 mirror and remote resume,
the memory preflight, the torchrun/DeepSpeed launch, the export and its check are shared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.data.splits import SplitResult

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig


@dataclass
class TrainResult:
    """The exported model folder and what training cost."""

    model_dir: str
    labels: list[str]
    train_seconds: float
    eval_seconds: float
    trainable_params: int
    total_params: int
    best_validation: dict[str, float]
    adapter: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None
    epochs_run: float = 0.0
    merge_check: dict[str, str] = field(default_factory=dict)
    """The merged-vs-unmerged check as the version's tags (``tuneops.merge_check.*``); empty where it does not apply."""


def checkpoint_key(cfg: TuneopsConfig, splits: SplitResult) -> str:
    """Same training settings and same split files -> same key: a re-run resumes the interrupted one's checkpoints.

    Only what shapes training counts (``TuneopsConfig.training_fingerprint``): a change to the gate's rules, the
    registry, monitoring or serving keeps the checkpoints."""
    parts = [cfg.training_fingerprint(), *sorted(splits.fingerprints.values())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def train(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str | None = None) -> TrainResult | None:
    """Train on the train split, select the best epoch on validation, export and verify the model folder.

    One loop for every task family (``model.task``); the family's plan supplies its model class,
    datasets, collator and metrics. Checkpoints go to ``$TUNEOPS_HOME/checkpoints/<key>`` every epoch
    (and to ``training.checkpoint_uri`` when set); if a previous attempt with the same config and data
    was killed, training resumes from its last checkpoint (weights, optimizer, scheduler, RNG and data
    position), fetched from the mirror when this machine has none, and ends where an uninterrupted run
    would. Under a distributed launch every worker runs this; only rank 0 exports and returns a result.
    """
    import transformers
    from transformers import Trainer

    from tuneops import families, settings
    from tuneops.training import engine, export, merge_check, optim
    from tuneops.training import logger as training_logger
    from tuneops.training.base_models import resolve as resolve_base
    from tuneops.training.checkpoints import checkpoint_mirror, fetch_remote_checkpoint, last_complete_checkpoint
    from tuneops.training.model_loading import pin

    transformers.logging.set_verbosity_error()
    family = families.of(cfg)
    frames = {name: pd.read_parquet(path) for name, path in splits.paths.items()}
    # An adapter is pinned to the base it trains on, an alias resolved now: a promotion during training changes
    # neither the base trained from nor the one recorded.
    pinned = pin(cfg.model.base) if cfg.training.method != "full" else None
    plan = family.plan_training(cfg, frames, resolve_base(
        pinned["base"] if pinned and pinned["kind"] == "registered" else cfg.model.base))
    transformers.set_seed(cfg.training.seed)
    task_type = plan.peft_task_type or family.peft_task_type
    prepared = export.prepare_model(plan.load_base, cfg, task_type)
    model, trainable, total, initial = prepared.model, prepared.trainable, prepared.total, prepared.initial

    key = checkpoint_key(cfg, splits)
    checkpoints = settings.checkpoints_dir() / key
    mirror = f"{cfg.training.checkpoint_uri.rstrip('/')}/{key}" if cfg.training.checkpoint_uri else None
    trainer = engine.quiet((plan.trainer_class or Trainer)(
        model=model,
        args=engine.training_arguments(cfg, checkpoints, plan.metric),
        train_dataset=plan.train_dataset,
        eval_dataset=plan.eval_dataset,
        data_collator=plan.collator,
        processing_class=plan.tokenizer,
        compute_metrics=plan.compute_metrics,
        callbacks=engine.callbacks(cfg, run_id) + ([checkpoint_mirror(mirror)] if mirror else []),
        optimizers=(optim.optimizer(model, cfg), None),
    ))
    resume = last_complete_checkpoint(checkpoints)
    if resume is None and mirror and trainer.args.world_size == 1:  # distributed: the launcher fetched it
        resume = fetch_remote_checkpoint(mirror, checkpoints)
    if resume:
        training_logger().info("resuming from %s", resume)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluated = engine.best_evaluation(trainer) if plan.final_evaluation else {}
    trained = export.trained_model(trainer, lambda: export.build_model(plan.load_base, cfg, task_type))
    if trained is None:
        return None  # a distributed worker other than rank 0: rank 0 exports and verifies
    best = plan.best_validation(trained, evaluated)
    eval_seconds = time.perf_counter() - start
    # Before the export, which may merge the trained model in place: the check merges a copy.
    merged_vs_unmerged = merge_check.run(trained, plan.compare_merged, cfg.training.method)

    model_dir = out_dir / "model"
    with export.plain_loading():
        adapter_report = export.export_model(trained, initial, cfg, model_dir, plan.tokenizer, pinned)
        plan.save_extra(model_dir)
        plan.verify_export(model_dir, best)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if mirror:
        from tuneops.data import storage

        storage.delete_folder(mirror)
    return TrainResult(
        model_dir=str(model_dir), labels=plan.labels, train_seconds=seconds, eval_seconds=eval_seconds,
        trainable_params=trainable, total_params=total, best_validation=best, adapter=adapter_report,
        resumed_from=Path(resume).name if resume else None, epochs_run=float(trainer.state.epoch or 0),
        merge_check=merged_vs_unmerged.tags() if merged_vs_unmerged else {},
    )


def launch_distributed(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str) -> TrainResult:
    """Run :func:`train` in N worker processes under torchrun, streaming their log into this run's.

    DDP uses gloo on CPU and NCCL on GPUs; the 'deepspeed' launcher is the same launch with the DeepSpeed
    engine enabled through the training arguments. A non-zero exit fails with the log's last lines.
    """
    import dataclasses
    import os
    import subprocess
    import sys
    from collections import deque

    from tuneops.errors import TrainingError
    from tuneops.ports import free_port
    from tuneops.training import checkpoints
    from tuneops.training import logger as training_logger

    dist = cfg.training.distributed
    if cfg.training.checkpoint_uri:  # workers share this node's disk: fetch a mirrored checkpoint once, here
        from tuneops import settings

        key = checkpoint_key(cfg, splits)
        if checkpoints.last_complete_checkpoint(settings.checkpoints_dir() / key) is None:
            checkpoints.fetch_remote_checkpoint(f"{cfg.training.checkpoint_uri.rstrip('/')}/{key}",
                                           settings.checkpoints_dir() / key)
    job_dir = out_dir / "launch"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = job_dir / "job.json"
    result_file = job_dir / "result.json"
    job.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "splits": dataclasses.asdict(splits),
                               "out_dir": str(out_dir), "run_id": run_id, "result": str(result_file)}))
    port = free_port()
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={dist.processes}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "tuneops.training.worker", str(job)]
    threads = max(1, (os.cpu_count() or 1) // dist.processes)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
           # ZeRO-3 calls torch's deprecated collective names on every step: one warning per call otherwise
           "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::FutureWarning")}
    log = training_logger()
    log.info("launching %d %s workers: %s", dist.processes, dist.launcher, " ".join(command[2:]))
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + dist.timeout_minutes * 60
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        if line:
            log.info("%s", line)
        if time.monotonic() > deadline:
            proc.kill()
            break
    code = proc.wait()
    if code != 0 or not result_file.is_file():
        lines = "\n".join(tail)
        reason = (f"ran past training.distributed.timeout_minutes ({dist.timeout_minutes})"
                  if time.monotonic() > deadline else f"exited with code {code}")
        raise TrainingError(f"the {dist.launcher} launch of {dist.processes} workers {reason}; last lines "
                                   f"of its log:\n{lines}\nFix the cause above, or set training.distributed."
                                   "launcher: none to train in one process")
    return TrainResult(**json.loads(result_file.read_text()))
