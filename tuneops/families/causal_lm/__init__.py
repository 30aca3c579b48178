"""Instruction tuning: prompt -> generated response, a causal language model (``model.task: causal_lm``).

Data contract: a prompt and a response column (or a column of chat conversations), checked with a
Great Expectations suite on both (nulls, blanks, lengths, control characters, duplicate prompts, row
count) and pandas (conversation shape, personal data in prompts and responses, the token-length
report); with a messages column each conversation is checked for shape, then validated as its
rendered prompt and final response. The split keys on the prompt. Training puts the loss on the
response tokens only; the best epoch has the lowest validation loss. Evaluation generates greedily and
scores exact match, ROUGE-L and (for the challenger) perplexity per example; the gate pairs the
per-example scores. Registered as a pyfunc that answers a ``prompt`` column with a ``response``.
The production log holds each prompt with its response, token counts, finish reason and latency;
monitoring compares the prompts (text, descriptors, embeddings) and the answers (length, empty and
cut-off answers, JSON validity, the labels they name). Not offered yet: hyperparameter search.
What it adds to the config: config.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
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
from tuneops.evaluation.metrics import generation_metrics
from tuneops.evaluation.results import Evaluation
from tuneops.families import INPUT_SIGNALS, Comparison, TaskFamily, register, require_log_columns
from tuneops.families.causal_lm.config import CONFIG, accepts
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS
from tuneops.training.merge_check import card_lines as merge_check_lines

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.plan import TrainingPlan
    from tuneops.training.trainer import TrainResult

__all__ = ["LOGGED", "accepts", "generator_model", "prepare_causal", "response_drift", "score_generations",
           "verify_export"]
PROMPT, RESPONSE = "prompt", "response"  # column names of the frame the GX suite sees


def _suite(cfg: TuneopsConfig) -> list[Expectation]:
    return text_suite(cfg.validation, [TextColumn(c, c, f"every {c}") for c in (PROMPT, RESPONSE)],
                      ("duplicate prompts", PROMPT, "prompts should be unique (policy: {policy})"))


def _conversation(value: Any) -> tuple[str | None, str | None, str]:
    """(prompt text, response, problem) of one messages value; problem is '' when the shape is right."""
    try:
        messages = json.loads(value) if isinstance(value, str) else list(value)
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    except (TypeError, ValueError, KeyError) as exc:
        return None, None, f"not a list of {{role, content}} messages ({type(exc).__name__})"
    if len(messages) < 2:
        return None, None, "needs at least one message before the final assistant message"
    if messages[-1]["role"] != "assistant":
        return None, None, f"the last message is from '{messages[-1]['role']}', not 'assistant'"
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages[:-1]), messages[-1]["content"], ""


def _as_prompt_response(df: pd.DataFrame, cfg: TuneopsConfig) -> tuple[pd.DataFrame, list[Check]]:
    """The prompt and response of each row as text; with a messages column, checked conversation shape."""
    d = cfg.data
    if not d.messages_column:
        return text_frame({PROMPT: df[d.prompt_column], RESPONSE: df[d.response_column].map(as_text)}), []
    parsed = [_conversation(v) for v in df[d.messages_column]]
    bad = pd.Series([bool(p) for *_, p in parsed], index=df.index)
    examples = [f"row {i}: {p}" for i, (*_, p) in zip(df.index, parsed, strict=True) if p][:3]
    check = Check("conversation shape", not bad.any(), int(bad.sum()), examples,
                  f"each '{d.messages_column}' value must be a list of {{role, content}} messages ending with an "
                  "assistant message")
    frame = pd.DataFrame({PROMPT: [p for p, *_ in parsed], RESPONSE: [r for _, r, _ in parsed]}, index=df.index)
    return frame, [check]


def _token_report(frame: pd.DataFrame, cfg: TuneopsConfig) -> Check:
    """How many examples (prompt + response + EOS) exceed model.max_length tokens and will be cut."""
    from transformers import AutoTokenizer

    from tuneops.training.base_models import resolve as resolve_base

    sample = frame.dropna().head(20_000)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_base(cfg.model.base))
    except (OSError, ValueError) as exc:
        return Check("token length", True, 0, [], f"not measured: tokenizer of {cfg.model.base} did not load ({exc})",
                     "info")
    if sample.empty:
        return Check("token length", True, 0, [], "not measured: no complete examples", "info")
    lengths = pd.Series([len(a) + len(b) + 1 for a, b in zip(
        tokenizer(sample[PROMPT].tolist())["input_ids"],
        tokenizer(sample[RESPONSE].tolist(), add_special_tokens=False)["input_ids"], strict=True)], index=sample.index)
    over = lengths[lengths > cfg.model.max_length]
    return Check("token length", True, len(over), masked_examples(sample.loc[over.index, PROMPT]),
                 f"{len(over) / len(lengths):.2%} of {len(lengths)} examples exceed model.max_length="
                 f"{cfg.model.max_length} tokens (prompt + response, before the template) and will lose the start of "
                 f"their prompt; longest {int(lengths.max())}, median {int(lengths.median())}", "info")


def validate_causal_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Every check of the instruction-data contract (plain function; the validate-data task calls it)."""
    d = cfg.data
    required = [c for c in (d.messages_column, d.prompt_column, d.response_column, d.id_column, d.group_column,
                            d.timestamp_column, *cfg.gate.slice_columns) if c]
    checks = required_columns(df, required, "data.prompt_column / data.response_column (or data.messages_column)")
    if not all(c.passed for c in checks):
        return ValidationReport(len(df), checks)
    frame, shape = _as_prompt_response(df, cfg)
    gx_checks, docs = run_gx(frame.reset_index(drop=True), _suite(cfg), docs_dir)
    personal = pii_check(frame.fillna(""), [PROMPT, RESPONSE], cfg.validation.pii_policy, "prompts and responses")
    return ValidationReport(len(df), checks + shape + gx_checks + [personal, _token_report(frame, cfg)], docs)


def prepare_causal(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """The validated data as training reads it: conversations as JSON text (hashable, one Parquet type),
    personal data masked under validation.pii_policy: redact."""
    d = cfg.data
    df = df.copy()
    if d.response_column:
        df[d.response_column] = df[d.response_column].map(as_text)
    if d.messages_column:
        df[d.messages_column] = [v if isinstance(v, str) else json.dumps(list(v), default=str)
                                 for v in df[d.messages_column]]
    if cfg.validation.pii_policy == "redact":
        df = redact(df, [c for c in (d.prompt_column, d.response_column, d.messages_column) if c])
    return df


# ----------------------------------------------------------------------------- training


class _Examples:
    """Encoded examples (unpadded); the collator pads each batch to its own longest row."""

    def __init__(self, rows: list[dict[str, list]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list]:
        return self.rows[i]


def verify_export(model_dir: Path, validation: pd.DataFrame, cfg: TuneopsConfig, expected_loss: float) -> None:
    """Reload the exported folder as serving will; its validation loss must match the trained model's."""
    from tuneops.families.causal_lm import generation
    from tuneops.training.export_check import require_same_loss

    sums, counts = generation.Generator(model_dir, cfg.training.eval_batch_size).response_nll(
        *generation.examples(validation, cfg))
    got = sum(sums) / max(sum(counts), 1)
    require_same_loss(got, expected_loss, cfg)


def plan_training(cfg: TuneopsConfig, frames: dict[str, pd.DataFrame], base: str) -> TrainingPlan:
    """A causal LM with the loss on the response tokens; the best epoch has the lowest validation loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneops.errors import TrainingError
    from tuneops.families.causal_lm import generation, merge_check
    from tuneops.training.merge_check import sample
    from tuneops.training.plan import TrainingPlan

    tokenizer = AutoTokenizer.from_pretrained(base)
    generation.ensure_pad_token(tokenizer)
    if tokenizer.eos_token_id is None:
        raise TrainingError(f"the tokenizer of {cfg.model.base} has no EOS token, so a trained model could not "
                            "learn where a response ends; set tokenizer.eos_token in the base model folder")
    settings = generation.GenerationSettings.of(cfg)

    def encode(frame: pd.DataFrame) -> _Examples:
        prompts, responses = generation.examples(frame, cfg)
        return _Examples([generation.encode_example(tokenizer, p, r, settings.prompt_template, settings.max_length,
                                                    settings.system_prompt)
                          for p, r in zip(prompts, responses, strict=True)])

    def best_validation(model: Any, evaluated: dict[str, float]) -> dict[str, float]:
        """Token-weighted loss of the validation responses, measured on the trained model as serving predicts."""
        sums, counts = generation.Generator(Path("."), cfg.training.eval_batch_size, model=model, tokenizer=tokenizer,
                                            settings=settings).response_nll(
            *generation.examples(frames["validation"], cfg))
        loss = sum(sums) / max(sum(counts), 1)
        return {"loss": loss, "perplexity": math.exp(loss)}

    def compare_merged(unmerged: Any, merged: Any) -> Any:
        """A seeded sample of serving.runtime_check_prompts validation prompts: the same greedy answer?"""
        prompts, _ = generation.examples(sample(frames["validation"], cfg.serving.runtime_check_prompts), cfg)
        return merge_check.compare(unmerged, merged, tokenizer, settings, merge_check.distinct(prompts),
                                   cfg.training.eval_batch_size)

    return TrainingPlan(
        tokenizer=tokenizer, load_base=lambda: AutoModelForCausalLM.from_pretrained(base),
        train_dataset=encode(frames["train"]), eval_dataset=encode(frames["validation"]),
        collator=generation.CausalCollator(tokenizer.pad_token_id), metric="loss", final_evaluation=False,
        best_validation=best_validation, save_extra=settings.save, compare_merged=compare_merged,
        verify_export=lambda model_dir, best: verify_export(model_dir, frames["validation"], cfg, best["loss"]))


# ----------------------------------------------------------------------------- evaluation


Generate = Callable[[list], list[str]]


WORST = 10  # lowest-scoring examples shown in the report


def evaluate(model_dir: str, frame: pd.DataFrame, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """Exact match, ROUGE-L and perplexity of the challenger (greedy generation); per-example scores kept."""
    generate, nll = generator_functions(model_dir, cfg)
    return score_generations(generate, frame, cfg, out_dir / "challenger_test.parquet", nll)


def score_generations(generate: Generate, frame: pd.DataFrame, cfg: TuneopsConfig, out_path: Path,
                      nll: Callable[[list, list[str]], tuple[list[float], list[int]]] | None = None) -> Evaluation:
    """Generate a response for every prompt of a frame, keep the per-example scores, compute the metrics."""
    from tuneops.families.causal_lm import generation

    prompts, references = generation.examples(frame, cfg)
    start = time.perf_counter()
    responses = [str(r) for r in generate(prompts)]
    seconds = time.perf_counter() - start
    predictions = pd.DataFrame({
        "prompt": [p if isinstance(p, str) else generation.render_prompt(None, p, "{prompt}") for p in prompts],
        "y_true": references, "y_pred": responses,
        "exact_match": [generation.exact_match(p, r) for p, r in zip(responses, references, strict=True)],
        "rouge_l": [generation.rouge_l(p, r) for p, r in zip(responses, references, strict=True)],
    })
    if cfg.model.response_format == "json_list":
        scores = pd.DataFrame([generation.label_set_scores(p, r) for p, r in zip(responses, references, strict=True)],
                              columns=["json_valid", "set_match", "tp", "fp", "fn"])
        predictions = pd.concat([predictions, scores], axis=1)
    if nll is not None:
        predictions["nll"], predictions["tokens"] = nll(prompts, references)
    for column in cfg.gate.slice_columns:
        predictions[f"slice:{column}"] = frame[column].astype(str).to_numpy()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_path, index=False)
    metrics = generation_metrics(predictions)
    metrics["seconds"] = seconds
    metrics["seconds_per_1000"] = seconds / max(len(prompts), 1) * 1000
    return Evaluation(metrics, str(out_path))


def generator_functions(model_dir: str, cfg: TuneopsConfig) -> tuple[Generate, Callable]:
    from tuneops.families.causal_lm.generation import Generator

    generator = Generator(model_dir, batch_size=cfg.training.eval_batch_size)
    return generator.generate, generator.response_nll


def registered_generate(name: str, version: str) -> Generate:
    from tuneops.serving.scoring import load_model

    model = load_model(name, version)

    def generate(prompts: list) -> list[str]:
        texts = [p if isinstance(p, str) else json.dumps(p) for p in prompts]  # the signature takes text
        return model.predict(pd.DataFrame({"prompt": texts}))["response"].astype(str).tolist()

    return generate


def zero_shot_baseline(frame: pd.DataFrame, splits: SplitResult, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """The base model before fine-tuning, answering the same test prompts the same way (greedy, same template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneops.families.causal_lm import generation
    from tuneops.training.base_models import resolve as resolve_base

    base = resolve_base(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    generator = generation.Generator(Path(base), cfg.training.eval_batch_size,
                                     model=AutoModelForCausalLM.from_pretrained(base), tokenizer=tokenizer,
                                     settings=generation.GenerationSettings.of(cfg))
    evaluation = score_generations(generator.generate, frame, cfg, out_dir / "baseline_test.parquet")
    evaluation.name = "zero-shot base model"
    return evaluation


SIDE_BY_SIDE = 8  # sample prompts shown with the base model's and the fine-tuned model's answers


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str,
                    baseline: Evaluation | None = None) -> str:
    """The report a reviewer reads: headline metrics, the gate's reasoning, base vs fine-tuned answers, the worst."""
    m = challenger.metrics
    predictions = pd.read_parquet(challenger.predictions_path)
    ppl = f", perplexity {m['perplexity']:.3f}" if "perplexity" in m else ""
    lines = [f"# Evaluation of {cfg.registry.model_name} (causal LM)", "",
             f"Test split ({len(predictions)} prompts, greedy, at most {cfg.model.max_new_tokens} new tokens): "
             f"ROUGE-L **{m['rouge_l']:.4f}**, exact match **{m['exact_match']:.4f}**{ppl}, "
             f"{m['seconds_per_1000']:.2f} s per 1,000 generations.", "", decision_md, "",
             f"## Lowest ROUGE-L ({min(WORST, len(predictions))} of {len(predictions)})", "",
             "| prompt | reference | generated | ROUGE-L |", "|---|---|---|---|"]

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")[:120]

    lines += [f"| {cell(r.prompt)} | {cell(r.y_true)} | {cell(r.y_pred)} | {r.rouge_l:.3f} |"
              for r in predictions.sort_values("rouge_l", kind="stable").head(WORST).itertuples()]
    if baseline is not None:
        base = pd.read_parquet(baseline.predictions_path)
        b = baseline.metrics
        lines += ["", f"## {baseline.name} vs fine-tuned ({min(SIDE_BY_SIDE, len(base))} of {len(base)} test prompts)",
                  "", f"The {baseline.name}: ROUGE-L {b['rouge_l']:.4f}, exact match {b['exact_match']:.4f} on the "
                  "same prompts.", "", "| prompt | reference | base model | fine-tuned |", "|---|---|---|---|"]
        lines += [f"| {cell(p)} | {cell(t)} | {cell(z)} | {cell(f)} |" for p, t, z, f in zip(
            predictions.prompt.head(SIDE_BY_SIDE), predictions.y_true, base.y_pred, predictions.y_pred, strict=False)]
    lines += ["", "Per-example scores: `evaluation/challenger_test.parquet` on the MLflow run."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- registration


def generator_model() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The pyfunc, an input example and an output example (for the signature)."""
    from tuneops.families.causal_lm.pyfunc import TextGeneratorModel

    return (TextGeneratorModel(), pd.DataFrame({"prompt": ["Which intent: I still have not received my new card"]}),
            pd.DataFrame({"response": ["card arrival"], "prompt_tokens": [31], "response_tokens": [3],
                          "finish_reason": ["stop"], "latency_ms": [42.0]}))


def generator_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
                   trained: TrainResult) -> str:
    """A markdown model card for an instruction-tuned causal LM."""
    d = cfg.data
    columns = (f"conversations in `{d.messages_column}`" if d.messages_column
               else f"prompts in `{d.prompt_column}`, responses in `{d.response_column}`")
    ppl = f", perplexity {metrics['perplexity']:.3f}" if "perplexity" in metrics else ""
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        "Answer instructions like those in the training data. Input: a DataFrame with a `prompt` column (text, or "
        "a list of {role, content} messages); output: a `response` column, greedy, at most "
        f"{cfg.model.max_new_tokens} new tokens.", "",
        "## Data",
        f"- source `{d.source()}` ({columns}), fingerprint `{tags['tuneops.data.fingerprint']}`",
        "- split (hash-based on the prompt, stable as data grows): " + ", ".join(
            f"{n} {splits.sizes[n]} rows (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        "", "## Training",
        f"- base model `{cfg.model.base}`, method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, "
        f"lr {cfg.training.learning_rate:g}, max length {cfg.model.max_length} tokens; loss on response tokens only",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"ROUGE-L {metrics['rouge_l']:.4f}, exact match {metrics['exact_match']:.4f}{ppl}; per-example scores "
        "and the lowest-scoring generations are in the run's `evaluation/` folder.", "",
        *merge_check_lines(tags),
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Generates free text: it can be fluent and wrong. Exact match and ROUGE-L measure overlap with one "
        "reference, not truth or safety.",
        f"- Prompt plus response are limited to {cfg.model.max_length} tokens; longer prompts lose their start.",
        "- Quality was measured on held-out rows of the same source; other channels or periods may differ.",
    ])


# ----------------------------------------------------------------------------- monitoring

LOGGED = ("prompt", *GENERATED_COLUMNS, "model_version")  # a production-log row, before its stamps


def _answers(frame: pd.DataFrame, source: str, fmt: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A log's answers as (one row per answer: tokens, empty, cut off, valid JSON; one row per label it names:
    the normalised answer for 'label', each item of the JSON list for 'json_list', '<invalid>' for broken JSON)."""
    from tuneops.families.causal_lm import generation

    require_log_columns(frame, source, ("response", "response_tokens", "finish_reason"))
    responses = frame["response"].fillna("").astype(str)
    view = pd.DataFrame({
        "response_tokens": pd.to_numeric(frame["response_tokens"], errors="coerce").to_numpy(),
        "empty_response": (responses.str.strip() == "").map({True: "empty", False: "answered"}).to_numpy(),
        "cut_off": (frame["finish_reason"].astype(str) == "length").map({True: "cut off", False: "complete"})
        .to_numpy()})
    if fmt == "json_list":
        parsed = responses.map(generation.parse_label_list)
        view["json_valid"] = parsed.isna().map({True: "invalid", False: "valid"}).to_numpy()
        labels = parsed.map(lambda p: ["<invalid>"] if p is None else p or ["<none>"])
    elif fmt == "label":
        labels = responses.map(lambda r: [generation.normalise_answer(r)])
    else:  # free text names no labels
        return view, None
    return view, pd.DataFrame({"label": labels.explode().astype(str).to_numpy()})


def response_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: TuneopsConfig) -> list[Comparison]:
    """The answers' side of a generator's traffic against the champion's answers on its held-out prompts:
    response length in tokens, empty answers, answers cut off at max_new_tokens, valid JSON (json_list), and
    the distribution of the labels the answers name (label, json_list)."""
    fmt = cfg.model.response_format
    (ref, ref_labels), (cur, cur_labels) = (_answers(reference, "prediction reference", fmt),
                                            _answers(current, "prediction log", fmt))
    methods = {"response_tokens": ("response_tokens", "wasserstein"), "empty_response": ("empty_response",
               "jensenshannon"), "cut_off": ("cut_off", "jensenshannon")}
    if fmt == "json_list":
        methods["json_valid"] = ("json_valid", "jensenshannon")
    comparisons = [Comparison(methods, ref, cur)]
    if ref_labels is not None and cur_labels is not None:
        comparisons.append(Comparison({"response_labels": ("label", "jensenshannon")}, ref_labels, cur_labels))
    return comparisons


register(TaskFamily.extend(
    CONFIG,
    noun="causal LM",
    peft_task_type="CAUSAL_LM",
    input_column=lambda cfg: cfg.data.prompt_column or cfg.data.messages_column or "prompt",
    validate=validate_causal_frame,
    prepare_data=prepare_causal,
    plan_training=plan_training,
    evaluate=evaluate,
    challenger=lambda model_dir, cfg: generator_functions(model_dir, cfg)[0],
    registered=registered_generate,
    score=score_generations,
    report_markdown=report_markdown,
    report_attachments=lambda evaluation: (evaluation.predictions_path,),
    model_card=generator_card,
    pyfunc=generator_model,
    baseline=zero_shot_baseline,
    prediction_columns=LOGGED,
    drift_signals=(*INPUT_SIGNALS, "response_tokens", "empty_response", "cut_off", "json_valid", "response_labels"),
    prediction_drift=response_drift,
    unsupported="hyperparameter search ranks trials by a classifier's validation metric; run train_model once per "
                "configuration to compare settings",
))
