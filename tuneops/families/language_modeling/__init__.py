"""Domain-adaptive fine-tuning on unlabelled text (``model.task: language_modeling``).

Data contract: one text column and no labels (the company's documents, ticket bodies, customer messages),
checked with Great Expectations (nulls, blanks, lengths, control characters, duplicates, row count) and
pandas (personal data, how many token blocks the corpus makes). Before the split, every text that is in
the test split of a supervised config named in ``language_modeling.exclude_test_of`` is dropped, so a
model later fine-tuned from this one is never tested on text it has read (the drop is reported in the
validation report, the run log and the model card). The split keys on the text.

Training: the texts are tokenised, concatenated and cut into blocks of ``model.max_length`` tokens;
an encoder (BERT-like, e.g. the MiniLM) learns masked-language modelling (``DataCollatorForLanguageModeling``
with ``language_modeling.mlm_probability``), a decoder (e.g. SmolLM2) next-token prediction; which one
follows from the base model's architecture. The packaged MiniLM ships no masked-LM head, so its head
starts random: its own pseudo-perplexity says little, the downstream result judges the adapted encoder.

Evaluation: held-out (pseudo-)perplexity on the test split (tuneops/families/language_modeling/language_model.py); the
gate pairs the
mean token log-likelihood of each test text with the champion's and with the base model's (the baseline).
Registered as a pyfunc that scores texts (log-likelihood, perplexity, tokens), and as a folder that loads
as a base: ``model.base: models:/NAME@champion`` in a classifier config starts from the adapted encoder
(a new classification head on its backbone), with lineage. Not offered: the production log, drift
monitoring and hyperparameter search (see ``unsupported``). What it adds to the config: config.py.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.data import pii
from tuneops.data.splits import normalise
from tuneops.data.validation import (
    Check,
    Expectation,
    TextColumn,
    ValidationReport,
    masked_examples,
    pii_check,
    redact,
    required_columns,
    run_gx,
    text_frame,
    text_suite,
    token_lengths,
)
from tuneops.evaluation.results import Evaluation
from tuneops.families import TaskFamily, register
from tuneops.families.language_modeling.config import CONFIG, LanguageModelingConfig, accepts
from tuneops.training.merge_check import card_lines as merge_check_lines

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.plan import TrainingPlan
    from tuneops.training.trainer import TrainResult

__all__ = ["accepts", "leak_keys", "settings", "supervised_test_texts"]
_log = logging.getLogger("tuneops.language_modeling")
TEXT = "text"  # the column the GX suite and the pyfunc see
WORST = 10  # least likely test texts shown in the report
RANDOM_HEAD = ("the base model has no masked-LM head, so its head starts from random weights: its own "
               "pseudo-perplexity (the baseline) says little; judge the adapted encoder by a supervised run started "
               "from it (README, Domain-adaptive fine-tuning)")


def settings(cfg: TuneopsConfig) -> LanguageModelingConfig:
    return cfg.language_modeling or LanguageModelingConfig()


# ----------------------------------------------------------------------------- the supervised test texts


def leak_keys(value: str) -> set[str]:
    """The normalised forms under which a supervised test input could appear in a corpus: the whole input, and
    what follows each ':' or line break (a prompt template such as 'Which intent: <text>' puts the text last)."""
    keys = {" ".join(value.lower().split())}
    for i, char in enumerate(value):
        if char in ":\n":
            tail = " ".join(value[i + 1:].lower().split())
            if tail:
                keys.add(tail)
    return keys


@functools.lru_cache(maxsize=16)
def supervised_test_texts(config_path: str) -> frozenset[str]:
    """The normalised test-split inputs of a supervised config: its data and subset read, its split recomputed."""
    from tuneops import families
    from tuneops.config import load_config
    from tuneops.data.rows import select_subset
    from tuneops.data.splits import assign_splits
    from tuneops.data.storage import read_dataset

    supervised = load_config(config_path)
    if supervised.model.task == "language_modeling":
        from tuneops.errors import ConfigError

        raise ConfigError(f"{config_path} is a language_modeling config: it has no supervised test split to keep out")
    data = supervised.split_data()
    frame = select_subset(read_dataset(supervised.data.path), supervised.data)
    test = frame[(assign_splits(frame, data, supervised.split) == "test").to_numpy()]
    columns = {data.text_column, families.of(supervised).input_column(supervised)} & set(test.columns)
    return frozenset(key for column in columns for value in test[column].dropna().astype(str)
                     for key in leak_keys(value))


def excluded_rows(texts: pd.Series, cfg: TuneopsConfig) -> dict[str, pd.Series]:
    """Per config of ``language_modeling.exclude_test_of``: which corpus rows are one of its test texts."""
    norm = normalise(texts)
    return {path: norm.isin(supervised_test_texts(path)) for path in settings(cfg).exclude_test_of}


# ----------------------------------------------------------------------------- data contract


def _suite(cfg: TuneopsConfig) -> list[Expectation]:
    return text_suite(cfg.validation, [TextColumn(TEXT, "text", "every text")],
                      ("duplicate texts", TEXT, "texts should be unique (policy: {policy}); a duplicate is read more "
                       "often"), table="the corpus")


def _exclusion_check(texts: pd.Series, cfg: TuneopsConfig) -> Check:
    """How many corpus rows are test texts of the supervised configs (they are dropped); an error if a config
    cannot be read, since the corpus could then leak its test split."""
    from tuneops.errors import TuneopsError

    if not settings(cfg).exclude_test_of:
        return Check("supervised test texts excluded", True, 0, [], "no supervised config named in "
                     "language_modeling.exclude_test_of: a classifier fine-tuned from this model may be tested on "
                     "texts it has read", "warning")
    try:
        found = excluded_rows(texts, cfg)
    except TuneopsError as exc:
        return Check("supervised test texts excluded", False, 0, [],
                     f"language_modeling.exclude_test_of cannot be read: {exc}")
    dropped = pd.concat(found.values(), axis=1).any(axis=1)
    per_config = ", ".join(f"{int(m.sum())} of {path}" for path, m in found.items())
    return Check("supervised test texts excluded", True, int(dropped.sum()), masked_examples(texts[dropped]),
                 f"{int(dropped.sum())} corpus rows are test texts of a supervised config ({per_config}) and are "
                 "dropped before the split", "info")


def _token_report(texts: pd.Series, cfg: TuneopsConfig) -> Check:
    """Tokens in the corpus and the blocks of model.max_length they make (on a sample of large corpora)."""
    measured = token_lengths(texts, cfg.model.base, "token blocks")
    if isinstance(measured, Check):
        return measured
    sample, lengths, sampled = measured
    tokens = sum(lengths) * texts.notna().sum() / len(sample)  # the sample scaled up to every non-null text
    return Check("token blocks", True, 0, [],
                 f"{'about ' if sampled else ''}{tokens:,.0f} tokens, {tokens / cfg.model.max_length:,.0f} blocks of "
                 f"model.max_length={cfg.model.max_length}; texts have a median of {int(lengths.median())}"
                 f" tokens, the longest {max(lengths)}", "info")


def validate_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Every check of the unlabelled-corpus contract (plain function; the validate-data task calls it)."""
    d = cfg.data
    required = [c for c in (d.text_column, d.id_column, d.group_column, d.timestamp_column, *cfg.gate.slice_columns)
                if c]
    checks = required_columns(df, required, "data.text_column")
    if not all(c.passed for c in checks):
        return ValidationReport(len(df), checks)
    frame = text_frame({TEXT: df[d.text_column]}).reset_index(drop=True)
    gx_checks, docs = run_gx(frame, _suite(cfg), docs_dir)
    filled = frame[TEXT].fillna("")
    return ValidationReport(len(df), checks + gx_checks + [
        pii_check(frame.fillna(""), [TEXT], cfg.validation.pii_policy, "texts"), _exclusion_check(filled, cfg),
        _token_report(frame[TEXT], cfg)], docs)


def prepare_corpus(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """The validated corpus as training reads it: the supervised test texts dropped, personal data masked under
    validation.pii_policy: redact."""
    column = cfg.data.text_column
    df = df.copy()
    found = excluded_rows(df[column], cfg)
    if found:
        dropped = pd.concat(found.values(), axis=1).any(axis=1)
        _log.info("corpus: %d of %d rows are test texts of %s and are left out of training", int(dropped.sum()),
                  len(df), ", ".join(found))
        df = df[~dropped.to_numpy()].reset_index(drop=True)
    return redact(df, [column]) if cfg.validation.pii_policy == "redact" else df


# ----------------------------------------------------------------------------- training


class _Blocks:
    """Token blocks (unpadded ids); the collator pads, and masks (encoders) or shifts (decoders) them."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.rows[i]}


def base_objective(base: str) -> str:
    import json

    from tuneops.families.language_modeling.language_model import objective_of

    config_file = Path(base) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if not config:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base).to_dict()
    return objective_of(config) or "clm"


def verify_export(model_dir: Path, validation: pd.DataFrame, cfg: TuneopsConfig, expected_loss: float) -> None:
    """Reload the exported folder as serving will; its validation loss must match the trained model's."""
    from tuneops.families.language_modeling import language_model as lm
    from tuneops.training.export_check import require_same_loss

    got = lm.loss_of(*lm.LanguageModelScorer(model_dir, cfg.training.eval_batch_size).score(
        validation[cfg.data.text_column].astype(str).tolist()))
    require_same_loss(got, expected_loss, cfg)


def plan_training(cfg: TuneopsConfig, frames: dict[str, pd.DataFrame], base: str) -> TrainingPlan:
    """Blocks of model.max_length tokens; masked-LM for an encoder, causal-LM for a decoder; lowest loss wins."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    from tuneops.errors import TrainingError
    from tuneops.families.language_modeling import language_model as lm
    from tuneops.families.language_modeling import merge_check
    from tuneops.training.plan import TrainingPlan

    objective = base_objective(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if objective == "mlm" and tokenizer.mask_token_id is None:
        raise TrainingError(f"the tokenizer of {cfg.model.base} has no mask token, so it cannot learn masked-language "
                            "modelling; use a BERT-like encoder's tokenizer or a decoder")
    if objective == "clm":
        if tokenizer.eos_token_id is None:
            raise TrainingError(f"the tokenizer of {cfg.model.base} has no EOS token to end each text with; set "
                                "tokenizer.eos_token in the base model folder")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    model_class = lm.model_class(objective)
    scoring = lm.LanguageModelSettings(objective, cfg.model.max_length)
    text = cfg.data.text_column

    def load_base() -> Any:
        import transformers

        transformers.logging.set_verbosity_error()  # the missing-head warning is said once, below, in words
        model, info = model_class.from_pretrained(base, output_loading_info=True)
        if objective == "mlm" and any(k.startswith(("cls.", "lm_head", "predictions"))
                                      for k in info.get("missing_keys", [])):
            _log.warning("masked-LM training of %s: %s", cfg.model.base, RANDOM_HEAD)
        return model

    def encode(frame: pd.DataFrame) -> _Blocks:
        documents = [lm.document_ids(tokenizer, t, objective) for t in frame[text].astype(str)]
        return _Blocks(lm.blocks(documents, cfg.model.max_length))

    validation_texts = frames["validation"][text].astype(str).tolist()

    def best_validation(model: Any, evaluated: dict[str, float]) -> dict[str, float]:
        """The validation texts scored as the test texts will be (fixed masks for an encoder)."""
        loss = lm.loss_of(*lm.LanguageModelScorer(model=model, tokenizer=tokenizer, settings=scoring,
                                                  batch_size=cfg.training.eval_batch_size).score(validation_texts))
        return {"loss": loss, "perplexity": lm.perplexity_of(loss)}

    def compare_merged(unmerged: Any, merged: Any) -> Any:
        """Every validation text: the same loss, within training.export_tolerance?"""
        return merge_check.compare(unmerged, merged, tokenizer, scoring, validation_texts,
                                   cfg.training.eval_batch_size, cfg.training.export_tolerance)

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=objective == "mlm",
                                               mlm_probability=settings(cfg).mlm_probability)
    return TrainingPlan(
        tokenizer=tokenizer, load_base=load_base, train_dataset=encode(frames["train"]),
        eval_dataset=encode(frames["validation"]), collator=collator, metric="loss", final_evaluation=False,
        best_validation=best_validation, save_extra=scoring.save, compare_merged=compare_merged,
        peft_task_type="CAUSAL_LM" if objective == "clm" else "FEATURE_EXTRACTION",
        trainer_class=lm.masked_lm_trainer() if objective == "mlm" else None,
        verify_export=lambda model_dir, best: verify_export(model_dir, frames["validation"], cfg, best["loss"]))


# ----------------------------------------------------------------------------- evaluation

Score = Any  # texts -> (summed nll per text, scored tokens per text)


def scorer_of(model_dir: str, cfg: TuneopsConfig) -> Score:
    from tuneops.families.language_modeling.language_model import LanguageModelScorer

    return LanguageModelScorer(model_dir, cfg.training.eval_batch_size).score


def registered_scorer(name: str, version: str) -> Score:
    """The registered version's pyfunc as a scorer (the champion, re-scored on this run's test texts)."""
    from tuneops.serving.scoring import load_model

    model = load_model(name, version)

    def score(texts: list[str]) -> tuple[list[float], list[int]]:
        out = model.predict(pd.DataFrame({TEXT: texts}))
        counts = out["tokens"].astype(int).tolist()
        return [-ll * n for ll, n in zip(out["log_likelihood"].astype(float), counts, strict=True)], counts

    return score


def score(scorer: Score, frame: pd.DataFrame, cfg: TuneopsConfig, out_path: Path) -> Evaluation:
    """Score every text of a frame; keep the per-text log-likelihood (what the gate pairs), nll and tokens."""
    from tuneops.families.language_modeling import language_model as lm

    texts = frame[cfg.data.text_column].astype(str).tolist()
    start = time.perf_counter()
    sums, counts = scorer(texts)
    seconds = time.perf_counter() - start
    predictions = pd.DataFrame({"y_true": texts, "y_pred": texts, "nll": sums, "tokens": counts,
                                "log_likelihood": [-s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]})
    for column in cfg.gate.slice_columns:
        predictions[f"slice:{column}"] = frame[column].astype(str).to_numpy()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_path, index=False)
    loss = lm.loss_of(sums, counts)
    return Evaluation({"log_likelihood": float(predictions.log_likelihood.mean()), "loss": loss,
                       "perplexity": lm.perplexity_of(loss), "tokens": float(sum(counts)), "seconds": seconds,
                       "seconds_per_1000": seconds / max(len(texts), 1) * 1000}, str(out_path))


def evaluate(model_dir: str, frame: pd.DataFrame, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """Held-out (pseudo-)perplexity of the adapted model on the test texts, per text kept for the gate."""
    return score(scorer_of(model_dir, cfg), frame, cfg, out_dir / "challenger_test.parquet")


def base_baseline(frame: pd.DataFrame, splits: SplitResult, cfg: TuneopsConfig, out_dir: Path) -> Evaluation:
    """The base model before adaptation, scored on the same test texts (an encoder gets a head as in training:
    random where the base has none, so its pseudo-perplexity is a floor, not a comparison that means much)."""
    from transformers import AutoTokenizer

    from tuneops.families.language_modeling import language_model as lm
    from tuneops.training.base_models import resolve as resolve_base

    base = resolve_base(cfg.model.base)
    objective = base_objective(base)
    import transformers

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    import torch

    torch.manual_seed(cfg.training.seed)  # the random head of an encoder without one: the same draw every run
    scorer = lm.LanguageModelScorer(model=lm.model_class(objective).from_pretrained(base), tokenizer=tokenizer,
                                    settings=lm.LanguageModelSettings(objective, cfg.model.max_length),
                                    batch_size=cfg.training.eval_batch_size)
    evaluation = score(scorer.score, frame, cfg, out_dir / "baseline_test.parquet")
    evaluation.name = "base model before adaptation"
    return evaluation


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str,
                    baseline: Evaluation | None = None) -> str:
    """Headline (pseudo-)perplexity, the gate's reasoning, the base model's figures, the least likely test texts."""
    m = challenger.metrics
    predictions = pd.read_parquet(challenger.predictions_path)
    kind = "pseudo-perplexity (15% of tokens masked)" if _objective_of_run(cfg) == "mlm" else "perplexity"
    lines = [f"# Evaluation of {cfg.registry.model_name} (language model adapted on unlabelled text)", "",
             f"Test split ({len(predictions)} texts, {int(m['tokens'])} scored tokens): {kind} "
             f"**{m['perplexity']:.3f}**, mean token log-likelihood **{m['log_likelihood']:.4f}**, "
             f"{m['seconds_per_1000']:.2f} s per 1,000 texts.", ""]
    if baseline is not None:
        b = baseline.metrics
        lines += [f"The {baseline.name}: {kind} {b['perplexity']:.3f}, mean token log-likelihood "
                  f"{b['log_likelihood']:.4f} on the same texts.", ""]
    lines += [decision_md, "", f"## Least likely test texts ({min(WORST, len(predictions))} of {len(predictions)})",
              "", "| text | log-likelihood per token | tokens |", "|---|---|---|"]
    lines += [f"| {pii.mask(str(r.y_true))[:120].replace('|', chr(92) + '|')} | {r.log_likelihood:.3f} | {r.tokens} |"
              for r in predictions.sort_values("log_likelihood", kind="stable").head(WORST).itertuples()]
    lines += ["", "Per-text scores: `evaluation/challenger_test.parquet` on the MLflow run."]
    return "\n".join(lines)


def _objective_of_run(cfg: TuneopsConfig) -> str:
    from tuneops.training.base_models import resolve as resolve_base

    return base_objective(resolve_base(cfg.model.base))


# ----------------------------------------------------------------------------- registration


def model_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
               trained: TrainResult) -> str:
    """The adapted model's card: corpus, what was kept out of it, objective, held-out perplexity, how to use it."""
    objective = _objective_of_run(cfg)
    lm_settings = settings(cfg)
    if lm_settings.exclude_test_of:
        # The same frame the run trained on: the dataset as read and validated (cheap next to training).
        from tuneops.data.storage import read_dataset

        found = excluded_rows(read_dataset(cfg.data.path)[cfg.data.text_column].fillna("").astype(str), cfg)
        dropped = int(pd.concat(found.values(), axis=1).any(axis=1).sum())
        excluded = (f"- {dropped} corpus rows that are test texts of the supervised configs "
                    f"{', '.join(f'`{p}`' for p in found)} were dropped before the split, so a classifier trained "
                    "from this model on those configs is not tested on text it has read")
    else:
        excluded = "- no supervised test split was kept out (language_modeling.exclude_test_of is empty)"
    kind = "masked-language modelling" if objective == "mlm" else "causal language modelling"
    ppl = "pseudo-perplexity (15% of tokens masked at fixed positions)" if objective == "mlm" else "perplexity"
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        f"A base for supervised fine-tuning on this domain: set `model.base: models:/{cfg.registry.model_name}"
        "@champion` in a classifier (or instruction-tuning) config; the supervised model's provenance names this "
        "version. As a pyfunc it scores texts: input a DataFrame with a `text` column; output `log_likelihood` "
        "(mean per scored token), `perplexity` and `tokens` per text (low likelihood: text unlike the domain).", "",
        "## Data",
        f"- unlabelled corpus `{cfg.data.source()}` (column `{cfg.data.text_column}`), fingerprint "
        f"`{tags['tuneops.data.fingerprint']}`",
        excluded,
        "- split (hash-based on the text, stable as data grows): " + ", ".join(
            f"{n} {splits.sizes[n]} texts (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        "", "## Training",
        f"- {kind} on blocks of {cfg.model.max_length} tokens"
        + (f", {lm_settings.mlm_probability:.0%} of tokens masked" if objective == "mlm" else ""),
        f"- base model `{cfg.model.base}`, method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, "
        f"lr {cfg.training.learning_rate:g}",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"{ppl} {metrics['perplexity']:.3f}, mean token log-likelihood {metrics['log_likelihood']:.4f} on the held-out "
        "texts; per-text scores are in the run's `evaluation/` folder.", "",
        *merge_check_lines(tags),
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        f"- {RANDOM_HEAD[0].upper()}{RANDOM_HEAD[1:]}." if objective == "mlm" else
        "- A lower perplexity on the domain says nothing about answering instructions; fine-tune it for the task.",
        "- Perplexities of models with different tokenizers are not comparable.",
        "- It has read every training text: a supervised test split not listed in language_modeling.exclude_test_of "
        "may overlap it.",
    ])


def pyfunc() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The pyfunc (log-likelihood, perplexity and tokens per text), an input and an output example."""
    from tuneops.families.language_modeling.pyfunc import TextScorerModel

    return (TextScorerModel(), pd.DataFrame({TEXT: ["I still have not received my new card"]}),
            pd.DataFrame({"log_likelihood": [-2.5], "perplexity": [12.2], "tokens": [3]}))


register(TaskFamily.extend(
    CONFIG,
    noun="language model adapted on unlabelled text",
    peft_task_type="FEATURE_EXTRACTION",
    input_column=lambda cfg: cfg.data.text_column,
    validate=validate_frame,
    prepare_data=prepare_corpus,
    plan_training=plan_training,
    evaluate=evaluate,
    challenger=scorer_of,
    registered=registered_scorer,
    score=score,
    report_markdown=report_markdown,
    report_attachments=lambda evaluation: (),
    model_card=model_card,
    pyfunc=pyfunc,
    baseline=base_baseline,
    unsupported="an adapted language model is a base, not a service with production traffic to monitor or a "
                "validation metric to search on: train a classifier from it (model.base: models:/NAME@champion) "
                "and monitor that; score texts with `tuneops predict` if you need their perplexity",
))
