"""The classifier's data contract: a text column and a label column, checked with Great Expectations (the
shared text-column suite of tuneops/data/validation.py, plus labels) and pandas (rows per class, class
imbalance, conflicting labels, personal data, token lengths); and the data policies that remove rows before
the split (validation.invalid_texts, conflicting_labels, rare_classes), recorded with the run and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tuneops.data.splits import normalise
from tuneops.data.validation import (
    EXAMPLES,
    Check,
    Expectation,
    TextColumn,
    ValidationReport,
    masked_examples,
    pii_check,
    redact,
    required_columns,
    run_gx,
    show,
    text_frame,
    text_suite,
    token_lengths,
)

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig


def _gx_suite(cfg: TuneopsConfig) -> list[Expectation]:
    import great_expectations.expectations as gxe

    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    suite = text_suite(v, [TextColumn(text, "text", f"'{text}'", missing=f"'{text}' must not be null")],
                       ("duplicate texts", text, f"'{text}' values should be unique (policy: {{policy}})"))
    suite.insert(2, ("label not null", f"'{label}' must not be null", "error",
                     gxe.ExpectColumnValuesToNotBeNull(column=label)))
    if v.allowed_labels is not None:
        suite.append(("labels allowed", f"'{label}' must be one of the {len(v.allowed_labels)} allowed labels",
                      "error", gxe.ExpectColumnValuesToBeInSet(column=label, value_set=v.allowed_labels)))
    return suite


def _token_report(texts: pd.Series, cfg: TuneopsConfig) -> Check:
    """How many rows the tokenizer would truncate at model.max_length (on a sample of large data)."""
    measured = token_lengths(texts, cfg.model.base, "token length")
    if isinstance(measured, Check):
        return measured
    sample, lengths, sampled = measured
    over = lengths[lengths > cfg.model.max_length]
    share = len(over) / max(len(lengths), 1)
    scope = f"a sample of {len(sample)} rows" if sampled else f"all {len(sample)} rows"
    detail = (f"{share:.2%} of {scope} exceed model.max_length={cfg.model.max_length} tokens and will be "
              f"truncated; longest {int(lengths.max())}, median {int(lengths.median())}")
    return Check("token length", True, len(over), masked_examples(sample.loc[over.index]), detail, "info")


def _pandas_checks(frame: pd.DataFrame, cfg: TuneopsConfig) -> list[Check]:
    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    checks = []
    counts = frame[label].dropna().value_counts()
    small = counts[counts < v.min_rows_per_class]
    checks.append(Check("rows per class", small.empty, int(small.sum()),
                        [f"{k!r}: {n} rows" for k, n in small.head(EXAMPLES).items()],
                        f"every label needs at least {v.min_rows_per_class} rows"
                        + (f"; {len(small)} labels have fewer" if len(small) else ""),
                        fix="set validation.rare_classes: drop to remove the rows of those labels before the split "
                        "(the model will not know them)" if v.rare_classes == "fail" else ""))
    checks.append(Check("at least two classes", len(counts) >= 2, 0, [],
                        f"found {len(counts)} distinct label(s); a classifier needs two or more"))
    if len(counts) >= 2:
        ratio = counts.iloc[0] / counts.iloc[-1]
        ok = ratio <= v.max_class_imbalance
        checks.append(Check("class imbalance", ok, 0,
                            [] if ok else [f"{counts.index[0]!r}: {counts.iloc[0]} rows vs {counts.index[-1]!r}: "
                                           f"{counts.iloc[-1]} rows"],
                            f"most/least frequent label ratio is {ratio:.1f}; the limit is {v.max_class_imbalance:g}"))

    if v.conflicting_labels in ("fail", "warn"):  # drop / majority resolved them before (apply_policies)
        conflicts = _conflicts(frame, text, label)
        found = len(conflicts.texts)
        strict = v.conflicting_labels == "fail"
        checks.append(Check("conflicting labels", found == 0, int(conflicts.rows.sum()), conflicts.examples,
                            "the same (normalised) text must not carry different labels"
                            + ("" if strict else " (policy warn, validation.conflicting_labels: kept and trained on)")
                            + (f"; {found} texts do" if found else ""), "error" if strict else "warning",
                            fix="set validation.conflicting_labels: drop (remove their rows), majority (keep each "
                            "text's most frequent label) or warn (train on them all)" if strict else ""))

    checks.append(pii_check(frame, [text], v.pii_policy, "texts"))
    checks.append(_token_report(frame[text], cfg))
    return checks


def validate_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Run every check of the contract on a dataset (plain function; the task wraps it)."""
    d = cfg.data
    required = [c for c in (d.text_column, d.label_column, d.id_column, d.group_column, d.timestamp_column,
                            *cfg.gate.slice_columns) if c]
    checks = required_columns(df, required, "data.text_column / data.label_column")
    if not all(c.passed for c in checks):
        return ValidationReport(len(df), checks)

    text, label = d.text_column, d.label_column
    wrong_type = df[text].map(lambda x: not isinstance(x, str) and not pd.isna(x))
    checks.append(Check("text type", not wrong_type.any(), int(wrong_type.sum()),
                        masked_examples(df.loc[wrong_type, text]), f"'{text}' must hold strings"))
    if d.timestamp_column:
        stamps = pd.to_datetime(df[d.timestamp_column], errors="coerce", utc=True)
        bad = stamps.isna()
        checks.append(Check("timestamps", not bad.any(), int(bad.sum()),
                            masked_examples(df.loc[bad, d.timestamp_column]),
                            f"'{d.timestamp_column}' must hold parseable dates"))
    kept, decisions = apply_policies(df, cfg)
    frame = text_frame({text: kept[text], label: kept[label]})
    gx_checks, docs = run_gx(frame, _gx_suite(cfg), docs_dir)
    if cfg.validation.invalid_texts == "fail":
        for check in gx_checks:
            if check.name in ("text not null", "text not blank", "text length"):
                check.fix = "set validation.invalid_texts: drop to remove such rows before the split"
    contract = _pandas_checks(frame, cfg)
    policies = {d.policy: d.record for d in decisions}
    if cfg.validation.conflicting_labels == "warn":  # kept and trained on: recorded like a decision
        found = next(c for c in contract if c.name == "conflicting labels")
        policies["conflicting_labels"] = f"warn: {found.failing_rows} rows kept"
    return ValidationReport(len(df), checks + [d.check for d in decisions] + gx_checks + contract, docs,
                            kept_rows=len(kept), policies=policies)


# ----------------------------------------------------------------------------- data policies


@dataclass(frozen=True)
class _Conflicts:
    texts: pd.Index
    """The normalised texts that carry more than one label."""
    rows: pd.Series
    """Per row of the frame: whether its text is one of them."""
    norm: pd.Series
    examples: list[str]


def _conflicts(frame: pd.DataFrame, text: str, label: str) -> _Conflicts:
    """Texts equal after normalisation that carry different labels (rows with a null text or label never do)."""
    valid = frame[text].notna() & frame[label].notna()
    norm = normalise(frame.loc[valid, text]).reindex(frame.index)
    labels = frame[label].astype(str)
    per_text = labels[valid].groupby(norm[valid].to_numpy()).nunique()
    texts = per_text.index[per_text > 1]
    rows = valid & norm.isin(texts)
    examples = []
    for key in texts[:EXAMPLES]:
        mine = rows & (norm == key)
        counts = labels[mine].value_counts()
        shown = ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
        examples.append(f"{show(str(frame.loc[mine, text].iloc[0]))} labelled {shown}")
    return _Conflicts(texts, rows, norm, examples)


@dataclass(frozen=True)
class PolicyDecision:
    """What one data policy did to the rows: the report's line and the record kept with the run and version."""

    policy: str
    """The validation field (conflicting_labels, invalid_texts, rare_classes)."""
    removed: pd.Series
    """Per row of the input: whether this policy removed it."""
    check: Check
    record: str
    """e.g. 'drop: 171 rows removed (47 texts)'; tag tuneops.data_policy.<policy>."""


def _decision(policy: str, setting: str, removed: pd.Series, examples: list[str], detail: str,
              summary: str) -> PolicyDecision:
    n = int(removed.sum())
    check = Check(policy.replace("_", " "), n == 0, n, examples,
                  f"policy {setting} (validation.{policy}): {detail if n else 'nothing to remove'}", "warning")
    return PolicyDecision(policy, removed, check, f"{setting}: {n} rows removed" + (f" ({summary})" if n else ""))


def _invalid_texts(df: pd.DataFrame, cfg: TuneopsConfig) -> PolicyDecision:
    text, v = cfg.data.text_column, cfg.validation
    null = df[text].isna()
    values = df[text].where(null, df[text].astype(str)).fillna("")
    blank = ~null & values.str.fullmatch(r"\s*")
    lengths = values.str.len()
    short = ~null & ~blank & (lengths < v.min_text_chars)
    long = ~null & (lengths > v.max_text_chars)
    removed = null | blank | short | long
    parts = {"null": null, "blank": blank, f"shorter than {v.min_text_chars} characters": short,
             f"longer than {v.max_text_chars} characters": long}
    summary = ", ".join(f"{int(m.sum())} {k}" for k, m in parts.items() if m.any())
    return _decision("invalid_texts", "drop", removed, masked_examples(df.loc[removed, text]),
                     f"{int(removed.sum())} rows whose text is {summary} were removed before the split", summary)


def _resolve_conflicts(df: pd.DataFrame, cfg: TuneopsConfig, keep: pd.Series) -> PolicyDecision:
    text, label, setting = cfg.data.text_column, cfg.data.label_column, cfg.validation.conflicting_labels
    frame = df[keep]
    conflicts = _conflicts(frame, text, label)
    removed = conflicts.rows.copy()
    detail = (f"{len(conflicts.texts)} texts carried different labels; all their {int(removed.sum())} rows were "
              "removed before the split")
    summary = f"{len(conflicts.texts)} texts"
    if setting == "majority" and len(conflicts.texts):
        rows = conflicts.rows
        pairs = pd.DataFrame({"norm": conflicts.norm[rows], "label": frame.loc[rows, label].astype(str)})
        counts = pairs.groupby(["norm", "label"]).size().rename("n").reset_index()
        top = counts.groupby("norm").n.transform("max")
        leaders = counts[counts.n == top]
        tied = leaders.groupby("norm").size()
        tied = tied.index[tied > 1]
        winner = leaders[~leaders.norm.isin(tied)].set_index("norm").label
        kept = rows & (pairs.norm.map(winner) == pairs.label).reindex(frame.index, fill_value=False)
        removed = rows & ~kept
        tie_rows = int(pairs.norm.isin(tied).sum())
        detail = (f"{len(conflicts.texts) - len(tied)} of {len(conflicts.texts)} texts with different labels keep "
                  f"the rows of their most frequent label ({int(kept.sum())} rows kept, "
                  f"{int(removed.sum()) - tie_rows} rows with another label removed); {len(tied)} ties (no single "
                  f"most frequent label) lost all their {tie_rows} rows; before the split")
        summary = f"{len(conflicts.texts)} texts, {len(tied)} ties"
        examples = [f"{e} -> {'tie, removed' if key in tied else 'kept ' + repr(winner[key])}"
                    for e, key in zip(conflicts.examples, conflicts.texts, strict=False)]
    else:
        examples = conflicts.examples
    return _decision("conflicting_labels", setting, removed.reindex(df.index, fill_value=False), examples, detail,
                     summary)


def _rare_classes(df: pd.DataFrame, cfg: TuneopsConfig, keep: pd.Series) -> PolicyDecision:
    label, v = cfg.data.label_column, cfg.validation
    labels = df[label].where(df[label].isna(), df[label].astype(str))
    counts = labels[keep].dropna().value_counts()
    small = counts[counts < v.min_rows_per_class]
    removed = keep & labels.isin(small.index)
    return _decision("rare_classes", "drop", removed, [f"{k!r}: {n} rows" for k, n in small.head(EXAMPLES).items()],
                     f"{len(small)} labels had fewer than {v.min_rows_per_class} rows (validation.min_rows_per_class); "
                     f"their {int(removed.sum())} rows were removed before the split, so the model does not know "
                     "these labels", f"{len(small)} labels")


def apply_policies(df: pd.DataFrame, cfg: TuneopsConfig) -> tuple[pd.DataFrame, list[PolicyDecision]]:
    """The rows that the data policies keep, and what each policy that is not 'fail' did.

    In order: validation.invalid_texts (null, blank, too short or too long texts), conflicting_labels (drop or
    majority), rare_classes (counted on the rows the first two kept). The same data and settings always keep the
    same rows, so validation (which reports it) and preparation (which applies it) agree; the hash-keyed split of
    a kept row does not depend on the rows removed (the text, id or group keys it).
    """
    v = cfg.validation
    keep = pd.Series(True, index=df.index)
    decisions = []
    if v.invalid_texts == "drop":
        decisions.append(_invalid_texts(df, cfg))
        keep &= ~decisions[-1].removed
    if v.conflicting_labels in ("drop", "majority"):
        decisions.append(_resolve_conflicts(df, cfg, keep))
        keep &= ~decisions[-1].removed
    if v.rare_classes == "drop":
        decisions.append(_rare_classes(df, cfg, keep))
        keep &= ~decisions[-1].removed
    return (df if keep.all() else df[keep]), decisions


def prepare(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """The validated rows as training reads them: the data policies applied, personal data masked (pii redact)."""
    kept, _ = apply_policies(df, cfg)
    return redact_texts(kept, cfg) if cfg.validation.pii_policy == "redact" else kept


def redact_texts(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """Mask personal data in the text column (validation.pii_policy: redact)."""
    return redact(df, [cfg.data.text_column])
