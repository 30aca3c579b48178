"""Fine-tune a sequence classifier with the transformers Trainer (and PEFT for adapter methods)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.split import SplitResult
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


def _mlflow_callback(run_id: str) -> Any:
    from transformers import TrainerCallback

    from tuneops import tracking

    class LogToMlflow(TrainerCallback):
        """Send the Trainer's loss and validation metrics to the flow's MLflow run, per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            numbers = {k.replace("eval_", "validation_"): v for k, v in (logs or {}).items()
                       if isinstance(v, int | float) and not k.endswith(("_runtime", "per_second"))}
            if numbers:
                tracking.log_metrics(run_id, numbers, step=state.global_step)

    return LogToMlflow()


def train_classifier(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str | None = None) -> TrainResult:
    """Train on the train split, select the best epoch on validation, export a plain model folder."""
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tuneops import methods
    from tuneops.models import resolve_base

    transformers.logging.set_verbosity_error()
    text, label = cfg.data.text_column, cfg.data.label_column
    frames = {name: pd.read_parquet(path) for name, path in splits.paths.items()}
    labels = sorted(set().union(*(set(f[label].astype(str)) for f in frames.values())))
    label2id = {name: i for i, name in enumerate(labels)}

    base = resolve_base(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    transformers.set_seed(cfg.training.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    method = methods.get(cfg.training.method)
    model = method.prepare(model, cfg.training)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    def encode(frame: pd.DataFrame) -> _Encoded:
        enc = tokenizer(frame[text].astype(str).tolist(), truncation=True, max_length=cfg.model.max_length)
        return _Encoded(dict(enc), [label2id[v] for v in frame[label].astype(str)])

    def compute_metrics(pred: Any) -> dict[str, float]:
        y_pred = pred.predictions.argmax(-1)
        return classification_metrics([labels[i] for i in pred.label_ids], [labels[i] for i in y_pred])

    t = cfg.training
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=cfg.gate.primary_metric,
        greater_is_better=True,
        train_sampling_strategy="group_by_length",
        logging_steps=10,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        save_only_model=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(frames["train"]),
        eval_dataset=encode(frames["validation"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[_mlflow_callback(run_id)] if run_id else [],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    best = trainer.evaluate()
    eval_seconds = time.perf_counter() - start

    model_dir = out_dir / "model"
    exported = method.export(trainer.model)
    exported.config.tuneops_max_length = cfg.model.max_length
    exported.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "tuneops_config.json").write_text(cfg.model_dump_json(indent=2))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return TrainResult(
        model_dir=str(model_dir), labels=labels, train_seconds=seconds, eval_seconds=eval_seconds,
        trainable_params=trainable,
        total_params=total,
        best_validation={k.replace("eval_", ""): float(v) for k, v in best.items()
                         if k in ("eval_accuracy", "eval_macro_f1")},
    )


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str) -> TrainResult:
    """Fine-tune with the configured method, evaluating on the validation split every epoch."""
    from tuneops import tracking

    result = train_classifier(cfg, splits, out_dir, run_id)
    tracking.log_metrics(run_id, {"train_seconds": result.train_seconds,
                                  "trainable_params": result.trainable_params,
                                  **{f"best_validation_{k}": v for k, v in result.best_validation.items()}})
    return result
