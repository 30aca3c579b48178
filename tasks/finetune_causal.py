"""Instruction-tune a causal language model (model.task: causal_lm) with the transformers Trainer and PEFT.

The same shape as the classifier's fine-tuning (tasks/finetune.py): checkpoints keyed by config and
split files (a killed run resumes), the best epoch on validation kept (here: validation loss on the
response tokens), adapters checked, and the export (merged weights, or base + adapter) reloaded the
way serving loads it and required to reproduce the validation loss.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.splits import SplitResult
from tuneops.training import TrainResult, checkpoint_key


class _Examples:
    """Encoded examples (unpadded); the collator pads each batch to its own longest row."""

    def __init__(self, rows: list[dict[str, list]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list]:
        return self.rows[i]


def train_causal_lm(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str | None = None) -> TrainResult:
    """Train on the train split, keep the epoch with the lowest validation loss, export and verify."""
    import math

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    from tuneops import engine, generation, settings
    from tuneops.models import resolve_base

    transformers.logging.set_verbosity_error()
    frames = {name: pd.read_parquet(path) for name, path in splits.paths.items()}
    base = resolve_base(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    generation.ensure_pad_token(tokenizer)
    if tokenizer.eos_token_id is None:
        raise engine.TrainingError(f"the tokenizer of {cfg.model.base} has no EOS token, so a trained model could "
                                   "not learn where a response ends; set tokenizer.eos_token in the base model folder")
    gen_settings = generation.GenerationSettings(cfg.model.prompt_template, cfg.model.max_length,
                                                 cfg.model.max_new_tokens)
    transformers.set_seed(cfg.training.seed)

    def load_base() -> Any:
        return AutoModelForCausalLM.from_pretrained(base)

    prepared = engine.prepare_model(load_base, cfg, "CAUSAL_LM")
    model, trainable, total, initial = prepared.model, prepared.trainable, prepared.total, prepared.initial

    def encode(frame: pd.DataFrame) -> list[dict[str, list]]:
        prompts, responses = generation.examples(frame, cfg)
        return [generation.encode_example(tokenizer, p, r, cfg.model.prompt_template, cfg.model.max_length)
                for p, r in zip(prompts, responses, strict=True)]

    validation = encode(frames["validation"])
    checkpoints = settings.checkpoints_dir() / checkpoint_key(cfg, splits)
    trainer = engine.quiet(Trainer(
        model=model,
        args=engine.training_arguments(cfg, checkpoints, "loss"),
        train_dataset=_Examples(encode(frames["train"])),
        eval_dataset=_Examples(validation),
        data_collator=generation.CausalCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=engine.callbacks(cfg, run_id),
    ))
    resume = engine.last_complete_checkpoint(checkpoints)
    if resume:
        engine.logger().info("resuming from %s", resume)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    trained = trainer.model
    start = time.perf_counter()
    before = generation.Generator(out_dir, cfg.training.eval_batch_size, model=trained, tokenizer=tokenizer,
                                  settings=gen_settings).response_nll(*generation.examples(frames["validation"], cfg))
    eval_seconds = time.perf_counter() - start
    loss = sum(before[0]) / max(sum(before[1]), 1)
    best = {"loss": loss, "perplexity": math.exp(loss)}

    model_dir = out_dir / "model"
    adapter_report = engine.export_model(trained, initial, cfg, model_dir, load_base, tokenizer)
    gen_settings.save(model_dir)
    verify_export(model_dir, frames["validation"], cfg, loss)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(
        model_dir=str(model_dir), labels=[], train_seconds=seconds, eval_seconds=eval_seconds,
        trainable_params=trainable, total_params=total, best_validation=best, adapter=adapter_report,
        resumed_from=Path(resume).name if resume else None, epochs_run=float(trainer.state.epoch or 0),
    )


def verify_export(model_dir: Path, validation: pd.DataFrame, cfg: TuneopsConfig, expected_loss: float) -> None:
    """Reload the exported folder as serving will; its validation loss must match the trained model's."""
    from tuneops import generation
    from tuneops.engine import TrainingError

    sums, counts = generation.Generator(model_dir, cfg.training.eval_batch_size).response_nll(
        *generation.examples(validation, cfg))
    got = sum(sums) / max(sum(counts), 1)
    if abs(got - expected_loss) > cfg.training.export_tolerance:
        raise TrainingError(
            f"the exported model does not reproduce the trained one: validation loss {got:.4f} after reloading vs "
            f"{expected_loss:.4f} in training (tolerance {cfg.training.export_tolerance}); the export of method "
            f"'{cfg.training.method}' is broken, nothing was registered")


@task(name="fine-tune-causal-lm", cache_policy=NO_CACHE)
def fine_tune_causal(cfg: TuneopsConfig, splits: SplitResult, out_dir: Path, run_id: str) -> TrainResult:
    """Instruction-tune with the configured method, evaluating validation loss every epoch."""
    from tuneops import tracking

    result = train_causal_lm(cfg, splits, out_dir, run_id)
    tracking.log_metrics(run_id, {"train_seconds": result.train_seconds,
                                  "trainable_params": result.trainable_params,
                                  **{f"best_validation_{k}": v for k, v in result.best_validation.items()}})
    return result
