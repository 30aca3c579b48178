"""Preference tuning: a causal LM learns which of two answers to a prompt is better (``model.task: preference``).

Why a family and not a method of causal_lm: the data contract differs (a prompt with a chosen and a
rejected answer), the trainer differs (TRL's DPOTrainer through the shared loop's trainer-class hook)
and so do the metrics; the method (LoRA, IA3, ...) stays orthogonal and is chosen as for any family.
What a preference-tuned model *is* does not differ: it is a causal LM that generates, so generation,
the registered pyfunc, serving and monitoring are the causal-LM family's (tuneops/families/causal_lm/__init__.py).

Data contract (Great Expectations on prompt, chosen and rejected: nulls, blanks, lengths, control
characters, duplicate prompts, row count; pandas: chosen different from rejected, personal data in any
of the three). The split keys on the prompt. What it adds to the config: config.py.

Evaluation scores every model, the champion included, on two kinds of rows of one predictions frame:
the held-out pairs (``preference_accuracy``: the chosen answer has the higher length-normalised
log-likelihood; the margin beside it) and the test split of the supervised task named by
``preference.task_config`` (that task's exact match, ROUGE-L, set match, JSON validity), so the gate
compares both with the champion (gate.also_compare) and preference accuracy cannot be bought by
forgetting the task.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.data.validation import (
    Check,
    Expectation,
    TextColumn,
    ValidationReport,
    as_text,
    masked_examples,
    pii_check,
    redact,
    required_columns,
    run_gx,
    text_frame,
    text_suite,
)
from tuneops.evaluation.results import Evaluation
from tuneops.families import INPUT_SIGNALS, TaskFamily, register
from tuneops.families import causal_lm as causal
from tuneops.families.preference.config import CONFIG
from tuneops.training.merge_check import card_lines as merge_check_lines

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.plan import TrainingPlan
    from tuneops.training.trainer import TrainResult

PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"  # column names of the frame the GX suite sees
GENERATION_FIELDS = ("prompt_template", "system_prompt", "response_format", "max_new_tokens", "stop_strings")
"""model.* settings that must equal the supervised task's, or the two tasks would be scored differently."""


# ----------------------------------------------------------------------------- the supervised task


def task_config(cfg: TuneopsConfig) -> TuneopsConfig:
    """The supervised config named by preference.task_config (its data, split and metrics)."""
    from tuneops.config import load_config

    assert cfg.preference is not None  # config_problems requires the section
    return load_config(cfg.preference.task_config)


def task_test_split(task: TuneopsConfig) -> pd.DataFrame:
    """The supervised task's test rows, split exactly as its own training run split them (hash of the key)."""
    from tuneops.data.rows import select_subset
    from tuneops.data.splits import assign_splits
    from tuneops.data.storage import read_dataset

    df = causal.prepare_causal(select_subset(read_dataset(task.data.path), task.data), task)
    return df[assign_splits(df, task.split_data(), task.split) == "test"].reset_index(drop=True)


# ----------------------------------------------------------------------------- data contract


def _suite(cfg: TuneopsConfig) -> list[Expectation]:
    return text_suite(cfg.validation, [
        TextColumn(c, c, f"every {c}", missing=f"every pair needs a {c}",
                   blank_note=" (an empty answer teaches nothing; drop the pair or fill it)")
        for c in (PROMPT, CHOSEN, REJECTED)], ("duplicate prompts", PROMPT, "each prompt should have one pair "
                                                "(policy: {policy})"), unit="pairs")


def _as_pairs(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    d = cfg.data
    return text_frame({PROMPT: df[d.prompt_column], CHOSEN: df[d.chosen_column].map(as_text),
                       REJECTED: df[d.rejected_column].map(as_text)})


def _distinct_answers(frame: pd.DataFrame) -> Check:
    same = frame[CHOSEN].notna() & (frame[CHOSEN].astype(str).str.strip() == frame[REJECTED].astype(str).str.strip())
    return Check("chosen differs from rejected", not same.any(), int(same.sum()),
                 masked_examples(frame.loc[same, PROMPT]),
                 "the chosen and the rejected answer of a pair must differ (an identical pair has no preference to "
                 "learn); fix or drop those pairs")


def _task_check(cfg: TuneopsConfig) -> Check:
    """The supervised task loads, is a causal LM and is scored the way this config generates."""
    from tuneops.errors import TuneopsError

    assert cfg.preference is not None
    path = cfg.preference.task_config
    try:
        task = task_config(cfg)
    except TuneopsError as exc:
        return Check("supervised task", False, 0, [], f"preference.task_config {path} does not load: {exc}")
    if task.model.task != "causal_lm":
        return Check("supervised task", False, 0, [], f"preference.task_config {path} is a {task.model.task} config; "
                     "name the causal_lm config of the task the model was fine-tuned on")
    differ = [f for f in GENERATION_FIELDS if getattr(task.model, f) != getattr(cfg.model, f)]
    if differ:
        return Check("supervised task", False, 0, [], f"model.{', model.'.join(differ)} differ from {path}'s; copy "
                     "them from it, so both tasks are answered and scored alike")
    return Check("supervised task", True, 0, [], f"{path}: its test split is scored with {task.gate.primary_metric}",
                 "info")


def validate(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Every check of the preference-data contract (plain function; the validate-data task calls it)."""
    d = cfg.data
    required = [c for c in (d.prompt_column, d.chosen_column, d.rejected_column, d.id_column, d.group_column,
                            d.timestamp_column) if c]
    checks = required_columns(df, required, "data.prompt_column / data.chosen_column / data.rejected_column")
    if not all(c.passed for c in checks):
        return ValidationReport(len(df), checks)
    frame = _as_pairs(df, cfg)
    gx_checks, docs = run_gx(frame.reset_index(drop=True), _suite(cfg), docs_dir)
    filled = frame.fillna("")
    personal = pii_check(filled, [PROMPT, CHOSEN, REJECTED], cfg.validation.pii_policy, "prompts and answers")
    return ValidationReport(len(df), checks + gx_checks + [_distinct_answers(frame), personal, _task_check(cfg)],
                            docs)


def prepare(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """Answers as text (a list of labels as its JSON text, as the supervised task trains it); personal data masked
    under validation.pii_policy: redact."""
    d = cfg.data
    df = df.copy()
    for column in (d.chosen_column, d.rejected_column):
        df[column] = df[column].map(as_text)
    if cfg.validation.pii_policy == "redact":
        df = redact(df, [d.prompt_column, d.chosen_column, d.rejected_column])
    return df


# ----------------------------------------------------------------------------- training


def _pairs(frame: pd.DataFrame, cfg: TuneopsConfig) -> tuple[list[str], list[str], list[str]]:
    d = cfg.data
    return (frame[d.prompt_column].astype(str).tolist(), frame[d.chosen_column].astype(str).tolist(),
            frame[d.rejected_column].astype(str).tolist())


def plan_training(cfg: TuneopsConfig, frames: dict[str, pd.DataFrame], base: str) -> TrainingPlan:
    """DPO on the pairs; the best epoch has the lowest validation DPO loss; the recorded validation metrics are the
    preference accuracy and margin, measured as evaluation measures them."""
    import hashlib
    import json

    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneops.errors import TrainingError
    from tuneops.families.causal_lm import generation, merge_check
    from tuneops.families.preference import trainer as preference
    from tuneops.training.merge_check import sample
    from tuneops.training.plan import TrainingPlan

    assert cfg.preference is not None
    tokenizer = AutoTokenizer.from_pretrained(base)
    generation.ensure_pad_token(tokenizer)
    if tokenizer.eos_token_id is None:
        raise TrainingError(f"the tokenizer of {cfg.model.base} has no EOS token, so the answers of a pair cannot end; "
                            "set tokenizer.eos_token in the base model folder")
    settings = generation.GenerationSettings.of(cfg)

    def encode(frame: pd.DataFrame) -> Any:
        rows = [preference.encode_pair(tokenizer, p, c, r, settings.prompt_template, settings.max_length,
                                       settings.system_prompt) for p, c, r in zip(*_pairs(frame, cfg), strict=True)]
        # The fingerprint is given, not derived: deriving it pickles the table with dill, whose disassembly
        # of a helper escapes into the run's log under Prefect's print capture.
        digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
        return datasets.Dataset(InMemoryTable(pa.Table.from_pylist(rows)), fingerprint=digest)

    def measure(generator: generation.Generator) -> dict[str, float]:
        return preference.summary(preference.score_pairs(generator, *_pairs(frames["validation"], cfg)))

    def best_validation(model: Any, evaluated: dict[str, float]) -> dict[str, float]:
        return measure(generation.Generator(Path("."), cfg.training.eval_batch_size, model=model, tokenizer=tokenizer,
                                            settings=settings))

    def verify_export(model_dir: Path, best: dict[str, float]) -> None:
        got = measure(generation.Generator(model_dir, cfg.training.eval_batch_size))
        if abs(got["preference_margin"] - best["preference_margin"]) > cfg.training.export_tolerance:
            raise TrainingError(
                f"the exported model does not reproduce the trained one: validation preference margin "
                f"{got['preference_margin']:.4f} after reloading vs {best['preference_margin']:.4f} in training "
                f"(tolerance {cfg.training.export_tolerance}); the export of method '{cfg.training.method}' is "
                "broken, nothing was registered")

    def compare_merged(unmerged: Any, merged: Any) -> Any:
        """The prompts of a seeded sample of serving.runtime_check_prompts validation pairs: the same greedy answer?"""
        prompts, _, _ = _pairs(sample(frames["validation"], cfg.serving.runtime_check_prompts), cfg)
        return merge_check.compare(unmerged, merged, tokenizer, settings, merge_check.distinct(prompts),
                                   cfg.training.eval_batch_size)

    p = cfg.preference
    return TrainingPlan(
        tokenizer=tokenizer, load_base=lambda: AutoModelForCausalLM.from_pretrained(base),
        train_dataset=encode(frames["train"]), eval_dataset=encode(frames["validation"]), collator=None,
        metric="loss", final_evaluation=False, best_validation=best_validation, save_extra=settings.save,
        trainer_class=preference.trainer_class(p.beta, p.loss_type, p.label_smoothing, cfg.model.max_length,
                                               p.sft_weight),
        verify_export=verify_export, compare_merged=compare_merged)


# ----------------------------------------------------------------------------- evaluation


def score(generator: Any, frame: pd.DataFrame, cfg: TuneopsConfig, out_path: Path) -> Evaluation:
    """One model on the held-out pairs of ``frame`` and on the supervised task's test split, in one frame.

    Pair rows carry ``preference_accuracy`` (1/0) and the margin; task rows carry the task's per-example scores
    (exact_match, rouge_l; set_match, json_valid for JSON-list answers). A frame without pairs (a supervised
    champion's own previous test split) is scored as task rows only.
    """
    from tuneops.families.preference import trainer as preference

    d = cfg.data
    task = task_config(cfg)
    start = time.perf_counter()
    parts = []
    if {d.chosen_column, d.rejected_column} <= set(frame.columns):
        prompts, chosen, rejected = _pairs(frame, cfg)
        scores = preference.score_pairs(generator, prompts, chosen, rejected)
        parts.append(pd.DataFrame({
            "kind": "pair", "prompt": prompts, "y_true": chosen, "rejected": rejected,
            "y_pred": ["chosen" if c else "rejected" for c in scores.correct],
            "chosen_logp": scores.chosen_logp, "rejected_logp": scores.rejected_logp,
            "preference_margin": scores.margin, "preference_accuracy": scores.correct}))
        task_frame = task_test_split(task)
    else:
        task_frame = frame
    pair_seconds = time.perf_counter() - start
    generated = causal.score_generations(generator.generate, task_frame, task, out_path.with_suffix(".task.parquet"))
    parts.append(pd.read_parquet(generated.predictions_path).assign(kind="task"))
    predictions = pd.concat(parts, ignore_index=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_path, index=False)
    metrics = {k: v for k, v in generated.metrics.items() if not k.startswith("seconds")}
    pairs = predictions[predictions.kind == "pair"]
    if len(pairs):
        metrics |= {"preference_accuracy": float(pairs.preference_accuracy.mean()),
                    "preference_margin": float(pairs.preference_margin.mean())}
    seconds = pair_seconds + generated.metrics["seconds"]
    metrics |= {"seconds": seconds, "seconds_per_1000": seconds / max(len(predictions), 1) * 1000}
    return Evaluation(metrics, str(out_path))


def evaluate(model_dir: str, frame: pd.DataFrame, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """The freshly trained model on the held-out pairs and the supervised test split."""
    from tuneops.families.causal_lm.generation import Generator

    return score(Generator(model_dir, cfg.training.eval_batch_size), frame, cfg, out_dir / "challenger_test.parquet")


def challenger_generator(model_dir: str, cfg: TuneopsConfig) -> Any:
    """The trained model's folder as a Generator (re-scoring on a previous split)."""
    from tuneops.families.causal_lm.generation import Generator

    return Generator(model_dir, cfg.training.eval_batch_size)


def registered_generator(name: str, version: str) -> Any:
    """A registered causal LM (the supervised champion, or an earlier preference-tuned version) as a Generator:
    log-likelihoods need the weights, not only the pyfunc's answers."""
    from tuneops.families.causal_lm.generation import Generator
    from tuneops.training.base_models import resolve

    return Generator(resolve(f"models:/{name}/{version}"))


WORST = 10  # lost pairs shown in the report


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str,
                    baseline: Evaluation | None = None) -> str:
    """Headline metrics (both kinds of rows), the gate's reasoning, the pairs the model gets most wrong."""
    m = challenger.metrics
    predictions = pd.read_parquet(challenger.predictions_path)
    pairs, task_rows = predictions[predictions.kind == "pair"], predictions[predictions.kind == "task"]
    task = ", ".join(f"{k} **{m[k]:.4f}**" for k in ("set_match", "json_valid", "exact_match", "rouge_l") if k in m)
    source = cfg.preference.task_config if cfg.preference else "the supervised task"

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")[:100]

    lines = [f"# Evaluation of {cfg.registry.model_name} (preference-tuned causal LM)", "",
             f"Held-out pairs ({len(pairs)}): preference accuracy **{m.get('preference_accuracy', math.nan):.4f}** "
             f"(chosen answer more likely per token than the rejected one), mean margin "
             f"{m.get('preference_margin', math.nan):+.4f} nats per token.", "",
             f"Supervised test split ({len(task_rows)} prompts of `{source}`, greedy): {task}.", "", decision_md, "",
             f"## Pairs with the lowest margin ({min(WORST, len(pairs))} of {len(pairs)})", "",
             "| prompt | chosen | rejected | margin |", "|---|---|---|---|"]
    lines += [f"| {cell(r.prompt)} | {cell(r.y_true)} | {cell(r.rejected)} | {r.preference_margin:+.3f} |"
              for r in pairs.sort_values("preference_margin", kind="stable").head(WORST).itertuples()]
    lines += ["", "Per-example scores (pairs and task prompts, column `kind`): `evaluation/challenger_test.parquet` "
              "on the MLflow run."]
    return "\n".join(lines)


def model_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
               trained: TrainResult) -> str:
    """A markdown model card for a preference-tuned causal LM, with its lineage."""
    d, p = cfg.data, cfg.preference
    assert p is not None
    parent = tags.get("tuneops.base_model.registered")
    lineage = (f"registered version `{parent}` (run `{tags.get('tuneops.base_model.run_id')}`, data fingerprint "
               f"`{tags.get('tuneops.base_model.data_fingerprint')}`)" if parent else f"`{cfg.model.base}`")
    task = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("set_match", "json_valid", "exact_match", "rouge_l")
                     if k in metrics)
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        "Answer instructions like those of the supervised task it was tuned from. Input: a DataFrame with a `prompt` "
        f"column; output: a `response` column, greedy, at most {cfg.model.max_new_tokens} new tokens.", "",
        "## Lineage",
        f"- preference-tuned (DPO, loss `{p.loss_type}`, beta {p.beta:g}"
        + (f", plus the supervised loss on chosen answers x {p.sft_weight:g}" if p.sft_weight else "")
        + f") from {lineage}",
        "- reference model during training: that base with the adapters disabled", "",
        "## Data",
        f"- preference pairs `{d.path}` (prompt `{d.prompt_column}`, chosen `{d.chosen_column}`, rejected "
        f"`{d.rejected_column}`), fingerprint `{tags['tuneops.data.fingerprint']}`",
        "- split (hash-based on the prompt): " + ", ".join(
            f"{n} {splits.sizes[n]} pairs (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        f"- supervised task scored beside it: `{p.task_config}` (its test split)", "",
        "## Training",
        f"- method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, lr {cfg.training.learning_rate:g}, max "
        f"length {cfg.model.max_length} tokens",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"Preference accuracy {metrics.get('preference_accuracy', math.nan):.4f} (mean margin "
        f"{metrics.get('preference_margin', math.nan):+.4f} nats per token) on held-out pairs; supervised test "
        f"split: {task}.", "",
        *merge_check_lines(tags),
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Preference accuracy says which of two given answers the model finds likelier, not that its own greedy "
        "answer is right; the supervised metrics above measure that.",
        "- Pairs built from a model's own mistakes teach it to avoid those mistakes; other errors may remain.",
    ])


register(TaskFamily.extend(
    CONFIG,
    noun="preference-tuned causal LM",
    peft_task_type="CAUSAL_LM",
    input_column=lambda cfg: cfg.data.prompt_column or "prompt",
    validate=validate,
    prepare_data=prepare,
    plan_training=plan_training,
    evaluate=evaluate,
    challenger=challenger_generator,
    registered=registered_generator,
    score=score,
    report_markdown=report_markdown,
    report_attachments=lambda evaluation: (evaluation.predictions_path,),
    model_card=model_card,
    pyfunc=causal.generator_model,
    prediction_columns=causal.LOGGED,
    drift_signals=(*INPUT_SIGNALS, "response_tokens", "empty_response", "cut_off", "json_valid", "response_labels"),
    prediction_drift=causal.response_drift,
    unsupported="hyperparameter search ranks trials by a classifier's validation metric; run train_model once per "
                "configuration to compare settings",
))
