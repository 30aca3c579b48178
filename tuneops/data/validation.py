"""The shape every data contract reports in, and the parts of a contract every task family shares.

A family's contract (``tuneops/families/<name>/``) names its checks; this module holds what they have in
common: the Great Expectations suite of text columns (:func:`text_suite`: nulls, blanks, lengths, control
characters, duplicates, row count), the personal-data check and redaction over any text columns, and the
runner that executes a suite as one GX checkpoint, renders Data Docs and gathers every check (GX or
pandas) into one :class:`ValidationReport`. Every example that reaches a report or a log is PII-masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from tuneops.data import pii

EXAMPLES = 3
TOKEN_SAMPLE = 20_000
POLICY_TAG = "tuneops.data_policy."
"""Run and version tags of the data policies' decisions (validation.conflicting_labels, ...)."""
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"

Severity = Literal["error", "warning", "info"]
Expectation = tuple[str, str, Severity, Any]  # (check name, what it requires, severity, GX expectation)


@dataclass
class Check:
    """One named check: whether it passed, how many rows failed it, and a few (masked) examples."""

    name: str
    passed: bool
    failing_rows: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str = ""
    severity: Severity = "error"
    fix: str = ""
    """The setting that lets a run proceed past this check with a recorded decision (a data policy), if any."""

    def __post_init__(self) -> None:  # numpy scalars from pandas would not serialise
        self.passed, self.failing_rows = bool(self.passed), int(self.failing_rows)


@dataclass
class ValidationReport:
    """Every check run on a dataset; it passes when no check of severity 'error' failed."""

    rows: int
    checks: list[Check]
    data_docs: str | None = None
    kept_rows: int | None = None
    """Rows left for the split after the data policies (validation.conflicting_labels, ...); None: all of them."""
    policies: dict[str, str] = field(default_factory=dict)
    """What each data policy decided, e.g. {'conflicting_labels': 'drop: 171 rows removed (47 texts)'}."""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.severity == "error")

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "error"]

    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "warning"]

    def summary(self) -> str:
        """A paragraph per failed check, for the error message a user reads."""
        lines = [f"data validation failed: {len(self.failures())} of {len(self.checks)} checks on {self.rows} rows"]
        for c in self.failures():
            lines.append(f"  - {c.name}: {c.detail}" + (f" ({c.failing_rows} rows)" if c.failing_rows else ""))
            lines += [f"      e.g. {e}" for e in c.examples]
            if c.fix:
                lines.append(f"      or {c.fix}")
        lines.append("Fix the data (or the validation section of the config) and run again; nothing was trained.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        status = "passed" if self.passed else "FAILED"
        kept = (f", {self.kept_rows} kept for the split after the data policies "
                f"({'; '.join(f'{k}: {v}' for k, v in self.policies.items())})" if self.policies else "")
        out = [f"# Data validation {status}", "", f"{self.rows} rows{kept}, {len(self.checks)} checks.", "",
               "| check | severity | result | failing rows | detail | examples |", "|---|---|---|---|---|---|"]
        for c in self.checks:
            result = "ok" if c.passed else ("FAIL" if c.severity == "error" else "note")
            examples = "; ".join(e.replace("|", "\\|") for e in c.examples)
            detail = f"{c.detail} (or {c.fix})" if c.fix and not c.passed else c.detail
            out.append(f"| {c.name} | {c.severity} | {result} | {c.failing_rows} | {detail} | {examples} |")
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "kept_rows": self.rows if self.kept_rows is None else self.kept_rows,
                           "policies": self.policies, "passed": self.passed,
                           "checks": [asdict(c) for c in self.checks]}, indent=2)


@dataclass(frozen=True)
class TextColumn:
    """A text column of the frame a contract checks, and how its checks are named and worded."""

    column: str
    """The column of the frame."""
    name: str
    """What the checks' names call it: 'prompt' gives 'prompt not null', 'prompt length', ..."""
    subject: str
    """How the checks' details speak of one value: "'text'", 'every prompt'."""
    missing: str = ""
    """The detail of the not-null check; default "<subject> must be present"."""
    blank_note: str = ""
    """Appended to the detail of the not-blank check."""


def text_suite(v: Any, columns: Sequence[TextColumn], unique: tuple[str, str, str], table: str = "the dataset",
               unit: str = "rows") -> list[Expectation]:
    """The Great Expectations suite every contract runs on its text columns, under the config's validation
    section ``v``: the row count (validation.min_rows..max_rows, '<table> must have 20..100 <unit>'), then per
    column not null, not blank, its length (validation.min_text_chars..max_text_chars) and no control
    characters or U+FFFD; last ``unique`` = (check name, column, detail with '{policy}') unique, an error
    under validation.duplicates: fail and a warning under warn."""
    import great_expectations.expectations as gxe

    suite: list[Expectation] = [
        ("row count", f"{table} must have {v.min_rows}..{v.max_rows} {unit}", "error",
         gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows))]
    for c in columns:
        suite += [
            (f"{c.name} not null", c.missing or f"{c.subject} must be present", "error",
             gxe.ExpectColumnValuesToNotBeNull(column=c.column)),
            (f"{c.name} not blank", f"{c.subject} must contain more than whitespace{c.blank_note}", "error",
             gxe.ExpectColumnValuesToNotMatchRegex(column=c.column, regex=r"^\s*$")),
            (f"{c.name} length", f"{c.subject} must be {v.min_text_chars}..{v.max_text_chars} characters", "error",
             gxe.ExpectColumnValueLengthsToBeBetween(column=c.column, min_value=v.min_text_chars,
                                                     max_value=v.max_text_chars)),
            (f"{c.name} control characters", f"{c.subject} must not hold control characters or U+FFFD (broken "
             "encoding)", "error", gxe.ExpectColumnValuesToNotMatchRegex(column=c.column, regex=CONTROL_CHARS)),
        ]
    name, column, detail = unique
    suite.append((name, detail.replace("{policy}", v.duplicates), "error" if v.duplicates == "fail" else "warning",
                  gxe.ExpectColumnValuesToBeUnique(column=column)))
    return suite


PII_ACTIONS = {"fail": "remove it from the data or set validation.pii_policy: redact",
               "redact": "it is masked before training", "warn": "it is kept in the training data"}


def pii_check(frame: pd.DataFrame, columns: Sequence[str], policy: str, what: str) -> Check:
    """Rows holding e-mail addresses, phone numbers, IBANs or card numbers in any of the text ``columns``
    (``what`` names them in the detail: 'prompts and answers'); an error under validation.pii_policy: fail, a
    warning otherwise. Examples are the first column's values, masked."""
    kinds = pii.scan(frame[columns[0]])
    for column in columns[1:]:
        kinds = kinds + "," + pii.scan(frame[column])
    kinds = kinds.str.strip(",")
    flagged = kinds[kinds != ""]
    counts = flagged.str.split(",").explode()
    found = ", ".join(f"{k}: {n}" for k, n in counts[counts != ""].value_counts().items())
    return Check("personal data", flagged.empty, len(flagged), masked_examples(frame.loc[flagged.index, columns[0]]),
                 f"{what} must not hold e-mail addresses, phone numbers, IBANs or card numbers (policy: {policy}; "
                 f"{PII_ACTIONS[policy]})" + (f"; found {found}" if found else ""),
                 "error" if policy == "fail" else "warning")


def redact(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Personal data masked in the text ``columns`` (validation.pii_policy: redact); ``df`` itself when it holds
    none, else a copy."""
    out = df
    for column in columns:
        flagged = pii.scan(out[column]) != ""
        if flagged.any():
            out = out.copy() if out is df else out
            out.loc[flagged, column] = out.loc[flagged, column].map(pii.mask)
    return out


def as_text(value: Any) -> Any:
    """A cell of an answer column as text: a list (e.g. the intents of a JSONL row) becomes its JSON text, as it
    is trained and generated; anything else is left as it is."""
    import numpy as np

    if isinstance(value, list | tuple | np.ndarray):
        return json.dumps([v.item() if hasattr(v, "item") else v for v in value])
    return value


def text_frame(columns: dict[str, pd.Series], convert: Callable[[Any], Any] = lambda value: value) -> pd.DataFrame:
    """The frame a contract's suite checks: each named column's cells as text (``convert`` first), nulls kept."""
    frame = pd.DataFrame({name: values.map(convert) for name, values in columns.items()})
    for name in frame.columns:
        frame[name] = frame[name].where(frame[name].isna(), frame[name].astype(str))
    return frame


def show(value: Any) -> str:
    text = pii.mask(value[:200]) if isinstance(value, str) else value
    if isinstance(text, str) and len(text) > 80:
        return repr(text[:77]) + "..."
    return repr(text)


def masked_examples(values: pd.Series) -> list[str]:
    return [show(v) for v in values.head(EXAMPLES)]


def run_gx(frame: pd.DataFrame, named: list[Expectation], docs_dir: Path | None) -> tuple[list[Check], str | None]:
    """Run a family's expectations as one GX checkpoint; Data Docs into ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (context.data_sources.add_pandas("tuneops").add_dataframe_asset("dataset")
                        .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(gx.ExpectationSuite(name="dataset-contract"))
    for *_, expectation in named:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="dataset-contract", data=batch_definition, suite=suite))
    run = definition.run(batch_parameters={"dataframe": frame},
                         result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES})
    docs = None
    if docs_dir is not None:
        docs = build_data_docs(run, docs_dir)

    by_id = {r.expectation_config.id: r for r in run.results}
    checks = []
    for name, detail, severity, expectation in named:
        r = by_id[expectation.id]
        res = r.result or {}
        examples = [show(x) for x in (res.get("partial_unexpected_list") or [])[:EXAMPLES] if not pd.isna(x)]
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail = f"{detail}; check could not run: {r.exception_info.get('exception_message')}"
        if name == "row count":
            detail = f"{detail}; it has {res.get('observed_value')}"
        checks.append(Check(name, bool(r.success), int(res.get("unexpected_count") or 0), examples, detail,
                            severity))
    return checks, docs


def build_data_docs(run: Any, docs_dir: Path) -> str | None:
    """Render the validation result as Great Expectations Data Docs (static HTML) under ``docs_dir``."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    assert isinstance(run, ExpectationSuiteValidationResult)
    for result in run.results:  # examples in the HTML are masked like every other report
        details = result.result or {}
        if details.get("partial_unexpected_list"):
            details["partial_unexpected_list"] = [show(x) for x in details["partial_unexpected_list"]]
        for key in ("partial_unexpected_index_list", "partial_unexpected_counts", "unexpected_list"):
            details.pop(key, None)
    document = ValidationResultsPageRenderer().render(run)
    html = DefaultJinjaPageView().render(document)
    docs_dir.mkdir(parents=True, exist_ok=True)
    path = docs_dir / "index.html"
    path.write_text(html)
    return str(path)


def required_columns(df: pd.DataFrame, required: list[str], hint: str) -> list[Check]:
    """The first checks of every contract: the named columns exist and there are rows; ``hint`` says which fields
    name the columns. A non-empty list with a failed check means the rest of the contract cannot run."""
    missing = [c for c in required if c not in df.columns]
    checks = [Check("required columns", not missing, 0, [],
                    f"missing column(s) {', '.join(repr(m) for m in missing)}; found {list(df.columns)}; set "
                    f"{hint} to the right names" if missing else f"{', '.join(repr(c) for c in required)} present")]
    if df.empty:
        checks.append(Check("row count", False, 0, [], f"the dataset has no rows (header only?); columns: "
                                                        f"{list(df.columns)}"))
    return checks


def token_lengths(texts: pd.Series, base: str, check: str) -> tuple[pd.Series, pd.Series, bool] | Check:
    """(texts measured, their token counts under the base model's tokenizer, whether they are a sample of
    TOKEN_SAMPLE); an info ``Check`` named ``check`` saying why nothing was measured (no texts, no tokenizer)."""
    from transformers import AutoTokenizer

    from tuneops.training.base_models import resolve as resolve_base

    sample = texts.dropna().astype(str)
    if sample.empty:
        return Check(check, True, 0, [], "not measured: no texts", "info")
    sampled = len(sample) > TOKEN_SAMPLE
    if sampled:
        sample = sample.sample(TOKEN_SAMPLE, random_state=0)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_base(base))
    except (OSError, ValueError) as exc:
        return Check(check, True, 0, [], f"not measured: tokenizer of {base} did not load ({exc})", "info")
    lengths = pd.Series([len(ids) for ids in tokenizer(sample.tolist(), add_special_tokens=True)["input_ids"]],
                        index=sample.index)
    return sample, lengths, sampled
