"""Fine-tune a sequence classifier with the transformers Trainer (and PEFT for adapter methods).

Plain functions, no Prefect: the fine-tune task calls them in-process, and the workers of a distributed
launch (tuneops/train_worker.py) call them without paying for an orchestration import.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.config import TuneopsConfig
from tuneops.splits import SplitResult


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


class _Encoded:
    """Token ids per row, unpadded: the collator pads each batch to its own longest row."""

    def __init__(self, enc: dict[str, list[Any]], labels: list[int]):
        self.enc, self.labels = enc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def classification_metrics(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in ``y_true``."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(y_true))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))}


def checkpoint_key(cfg: TuneopsConfig, splits: SplitResult) -> str:
    """Same config and same split files -> same key: a re-run resumes the interrupted one's checkpoints."""
    parts = [cfg.fingerprint(), *sorted(splits.fingerprints.values())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def train_classifier(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path,
                     run_id: str | None = None) -> TrainResult | None:
    """Train on the train split, select the best epoch on validation, export and verify the model folder.

    Checkpoints go to ``$TUNEOPS_HOME/checkpoints/<key>`` every epoch; if a previous attempt with the
    same config and data was killed, training resumes from its last checkpoint (weights, optimizer,
    scheduler, RNG and data position) and ends where an uninterrupted run would. Under a distributed
    launch every worker runs this; only rank 0 exports and returns a result.
    """
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    from tuneops import engine, settings
    from tuneops.models import resolve_base

    transformers.logging.set_verbosity_error()
    text, label = cfg.data.text_column, cfg.data.label_column
    frames = {name: pd.read_parquet(path) for name, path in splits.paths.items()}
    labels = sorted(set().union(*(set(f[label].astype(str)) for f in frames.values())))
    label2id = {name: i for i, name in enumerate(labels)}

    base = resolve_base(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    transformers.set_seed(cfg.training.seed)

    def load_base() -> Any:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
        model.config.tuneops_max_length = cfg.model.max_length
        return model

    prepared = engine.prepare_model(load_base, cfg, "SEQ_CLS")
    model, trainable, total, initial = prepared.model, prepared.trainable, prepared.total, prepared.initial

    def encode(frame: pd.DataFrame) -> _Encoded:
        enc = tokenizer(frame[text].astype(str).tolist(), truncation=True, max_length=cfg.model.max_length)
        return _Encoded(dict(enc), [label2id[v] for v in frame[label].astype(str)])

    def compute_metrics(pred: Any) -> dict[str, float]:
        y_pred = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return classification_metrics([labels[i] for i in pred.label_ids], [labels[i] for i in y_pred.argmax(-1)])

    key = checkpoint_key(cfg, splits)
    checkpoints = settings.checkpoints_dir() / key
    mirror = f"{cfg.training.checkpoint_uri.rstrip('/')}/{key}" if cfg.training.checkpoint_uri else None
    trainer = engine.quiet(Trainer(
        model=model,
        args=engine.training_arguments(cfg, checkpoints, cfg.gate.primary_metric),
        train_dataset=encode(frames["train"]),
        eval_dataset=encode(frames["validation"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=engine.callbacks(cfg, run_id) + ([engine.checkpoint_mirror(mirror)] if mirror else []),
    ))
    resume = engine.last_complete_checkpoint(checkpoints)
    if resume is None and mirror and trainer.args.world_size == 1:  # distributed: the launcher fetched it
        resume = engine.fetch_remote_checkpoint(mirror, checkpoints)
    if resume:
        engine.logger().info("resuming from %s", resume)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluated = trainer.evaluate()
    eval_seconds = time.perf_counter() - start
    best = {k.removeprefix("eval_"): float(v) for k, v in evaluated.items() if k in ("eval_accuracy", "eval_macro_f1")}
    trained = engine.trained_model(trainer, lambda: engine.build_model(load_base, cfg, "SEQ_CLS"))
    if trained is None:
        return None  # a distributed worker other than rank 0: rank 0 exports and verifies

    model_dir = out_dir / "model"
    with engine.plain_loading():
        adapter_report = engine.export_model(trained, initial, cfg, model_dir, load_base, tokenizer)
        verify_export(model_dir, frames["validation"], cfg, best)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if mirror:
        from tuneops import storage

        storage.delete_folder(mirror)
    return TrainResult(
        model_dir=str(model_dir), labels=labels, train_seconds=seconds, eval_seconds=eval_seconds,
        trainable_params=trainable, total_params=total, best_validation=best, adapter=adapter_report,
        resumed_from=Path(resume).name if resume else None, epochs_run=float(trainer.state.epoch or 0),
    )


def verify_export(model_dir: Path, validation: pd.DataFrame, cfg: TuneopsConfig, expected: dict[str, float]) -> None:
    """Reload the exported folder the way serving will and re-score validation: it must match training."""
    from tuneops.engine import TrainingError
    from tuneops.models import Classifier

    out = Classifier(model_dir, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)
    texts = validation[cfg.data.text_column].astype(str).tolist()
    got = classification_metrics(validation[cfg.data.label_column].astype(str).tolist(), out.predict(texts).labels)
    metric = cfg.gate.primary_metric
    if abs(got[metric] - expected[metric]) > cfg.training.export_tolerance:
        raise TrainingError(
            f"the exported model does not reproduce the trained one: validation {metric} {got[metric]:.4f} after "
            f"reloading vs {expected[metric]:.4f} in training (tolerance {cfg.training.export_tolerance}); the "
            f"export of method '{cfg.training.method}' is broken, nothing was registered")


def launch_distributed(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str) -> TrainResult:
    """Run ``train_classifier`` in N worker processes under torchrun, streaming their log into this run's.

    DDP uses gloo on CPU and NCCL on GPUs; the 'deepspeed' launcher is the same launch with the DeepSpeed
    engine enabled through the training arguments. A non-zero exit fails with the log's last lines.
    """
    import dataclasses
    import os
    import socket
    import subprocess
    import sys
    from collections import deque

    from tuneops import engine

    dist = cfg.training.distributed
    if cfg.training.checkpoint_uri:  # workers share this node's disk: fetch a mirrored checkpoint once, here
        from tuneops import settings

        key = checkpoint_key(cfg, splits)
        if engine.last_complete_checkpoint(settings.checkpoints_dir() / key) is None:
            engine.fetch_remote_checkpoint(f"{cfg.training.checkpoint_uri.rstrip('/')}/{key}",
                                           settings.checkpoints_dir() / key)
    job_dir = out_dir / "launch"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = job_dir / "job.json"
    result_file = job_dir / "result.json"
    job.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "splits": dataclasses.asdict(splits),
                               "out_dir": str(out_dir), "run_id": run_id, "result": str(result_file)}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={dist.processes}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "tuneops.train_worker", str(job)]
    threads = max(1, (os.cpu_count() or 1) // dist.processes)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
           # ZeRO-3 calls torch's deprecated collective names on every step: one warning per call otherwise
           "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::FutureWarning")}
    log = engine.logger()
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
        raise engine.TrainingError(f"the {dist.launcher} launch of {dist.processes} workers {reason}; last lines "
                                   f"of its log:\n{lines}\nFix the cause above, or set training.distributed."
                                   "launcher: none to train in one process")
    return TrainResult(**json.loads(result_file.read_text()))
