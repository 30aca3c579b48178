"""The data contract of instruction-tuning data (model.task: causal_lm), checked before any compute is spent.

Same structure as the classification contract (tasks/validation.py): a Great Expectations suite
on the prompt and response columns (nulls, blanks, lengths, control characters, duplicate prompts,
row count), plus pandas checks GX has no expectation for (conversation structure of a messages
column, personal data in prompts and responses, the token-length report). With a messages column,
each conversation is checked for shape and then validated as its rendered prompt and final response.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.validation import Check, Severity, ValidationReport, _examples, _run_gx
from tuneops import pii
from tuneops.config import TuneopsConfig

PROMPT, RESPONSE = "prompt", "response"  # column names of the frame the GX suite sees


def _suite(cfg: TuneopsConfig) -> list[tuple[str, str, Severity, Any]]:
    import great_expectations.expectations as gxe

    from tasks.validation import CONTROL_CHARS

    v = cfg.validation
    suite: list[tuple[str, str, Severity, Any]] = [
        ("row count", f"the dataset must have {v.min_rows}..{v.max_rows} rows", "error",
         gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows))]
    for column in (PROMPT, RESPONSE):
        suite += [
            (f"{column} not null", f"every {column} must be present", "error",
             gxe.ExpectColumnValuesToNotBeNull(column=column)),
            (f"{column} not blank", f"every {column} must contain more than whitespace", "error",
             gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=r"^\s*$")),
            (f"{column} length", f"every {column} must be {v.min_text_chars}..{v.max_text_chars} characters "
             "(validation.min_text_chars / max_text_chars)", "error",
             gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=v.min_text_chars,
                                                     max_value=v.max_text_chars)),
            (f"{column} control characters", f"{column}s must not hold control characters or U+FFFD", "error",
             gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=CONTROL_CHARS)),
        ]
    suite.append(("duplicate prompts", f"prompts should be unique (policy: {v.duplicates})",
                  "error" if v.duplicates == "fail" else "warning", gxe.ExpectColumnValuesToBeUnique(column=PROMPT)))
    return suite


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
        frame = pd.DataFrame({PROMPT: df[d.prompt_column], RESPONSE: df[d.response_column]})
        for column in (PROMPT, RESPONSE):
            frame[column] = frame[column].where(frame[column].isna(), frame[column].astype(str))
        return frame, []
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

    from tuneops.models import resolve_base

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
    return Check("token length", True, len(over), _examples(sample.loc[over.index, PROMPT]),
                 f"{len(over) / len(lengths):.2%} of {len(lengths)} examples exceed model.max_length="
                 f"{cfg.model.max_length} tokens (prompt + response, before the template) and will lose the start of "
                 f"their prompt; longest {int(lengths.max())}, median {int(lengths.median())}", "info")


def _pii_check(frame: pd.DataFrame, cfg: TuneopsConfig) -> Check:
    policy = cfg.validation.pii_policy
    kinds = pii.scan(frame[PROMPT]) + "," + pii.scan(frame[RESPONSE])
    flagged = kinds[kinds.str.strip(",") != ""]
    action = {"fail": "remove it or set validation.pii_policy: redact", "redact": "it is masked before training",
              "warn": "it is kept in the training data"}[policy]
    return Check("personal data", flagged.empty, len(flagged), _examples(frame.loc[flagged.index, PROMPT]),
                 f"prompts and responses must not hold e-mail addresses, phone numbers, IBANs or card numbers "
                 f"(policy: {policy}; {action})", "error" if policy == "fail" else "warning")


def validate_causal_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Every check of the instruction-data contract (plain function; tasks/validation.py's task calls it)."""
    d = cfg.data
    required = [c for c in (d.messages_column, d.prompt_column, d.response_column, d.id_column, d.group_column,
                            d.timestamp_column, *cfg.gate.slice_columns) if c]
    missing = [c for c in required if c not in df.columns]
    checks = [Check("required columns", not missing, 0, [],
                    f"missing column(s) {', '.join(repr(m) for m in missing)}; found {list(df.columns)}; set "
                    "data.prompt_column / data.response_column (or data.messages_column) to the right names"
                    if missing else f"{', '.join(repr(c) for c in required)} present")]
    if missing or df.empty:
        if df.empty:
            checks.append(Check("row count", False, 0, [], f"the dataset has no rows; columns: {list(df.columns)}"))
        return ValidationReport(len(df), checks)
    frame, shape = _as_prompt_response(df, cfg)
    gx_checks, docs = _run_gx(frame.reset_index(drop=True), cfg, docs_dir, _suite(cfg))
    return ValidationReport(len(df), checks + shape + gx_checks + [_pii_check(frame.fillna(""), cfg),
                                                                   _token_report(frame, cfg)], docs)


def prepare_causal(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """The validated data as training reads it: conversations as JSON text (hashable, one Parquet type),
    personal data masked under validation.pii_policy: redact."""
    d = cfg.data
    df = df.copy()
    if d.messages_column:
        df[d.messages_column] = [v if isinstance(v, str) else json.dumps(list(v), default=str)
                                 for v in df[d.messages_column]]
    if cfg.validation.pii_policy == "redact":
        for column in (c for c in (d.prompt_column, d.response_column, d.messages_column) if c):
            flagged = pii.scan(df[column]) != ""
            df.loc[flagged, column] = df.loc[flagged, column].map(pii.mask)
    return df
