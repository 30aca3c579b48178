"""Check the dataset against its contract with Great Expectations, before any compute is spent.

The suite is built from the config: columns, null and blank text, length bounds, allowed labels,
row-count bounds, control characters and broken encoding, duplicate texts. Checks Great
Expectations has no expectation for (rows per class, class imbalance, conflicting labels,
personal data with Luhn/mod-97 checks, the token-length report) are computed with pandas and
reported in the same shape, so a reader sees one list of named checks. Every example that
reaches a report or a log is PII-masked.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.split import normalise
from tuneops import pii
from tuneops.config import TuneopsConfig
from tuneops.errors import DataError

EXAMPLES = 3
TOKEN_SAMPLE = 20_000
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"

Severity = Literal["error", "warning", "info"]


@dataclass
class Check:
    """One named check: whether it passed, how many rows failed it, and a few (masked) examples."""

    name: str
    passed: bool
    failing_rows: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str = ""
    severity: Severity = "error"

    def __post_init__(self) -> None:  # numpy scalars from pandas would not serialise
        self.passed, self.failing_rows = bool(self.passed), int(self.failing_rows)


@dataclass
class ValidationReport:
    """Every check run on a dataset; it passes when no check of severity 'error' failed."""

    rows: int
    checks: list[Check]
    data_docs: str | None = None

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
        lines.append("Fix the data (or the validation section of the config) and run again; nothing was trained.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        status = "passed" if self.passed else "FAILED"
        out = [f"# Data validation {status}", "", f"{self.rows} rows, {len(self.checks)} checks.", "",
               "| check | severity | result | failing rows | detail | examples |", "|---|---|---|---|---|---|"]
        for c in self.checks:
            result = "ok" if c.passed else ("FAIL" if c.severity == "error" else "note")
            examples = "; ".join(e.replace("|", "\\|") for e in c.examples)
            out.append(f"| {c.name} | {c.severity} | {result} | {c.failing_rows} | {c.detail} | {examples} |")
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "passed": self.passed, "checks": [asdict(c) for c in self.checks]},
                          indent=2)


def _show(value: Any) -> str:
    text = pii.mask(value[:200]) if isinstance(value, str) else value
    if isinstance(text, str) and len(text) > 80:
        return repr(text[:77]) + "..."
    return repr(text)


def _examples(values: pd.Series) -> list[str]:
    return [_show(v) for v in values.head(EXAMPLES)]


# ----------------------------------------------------------------------------- Great Expectations


def _gx_suite(cfg: TuneopsConfig) -> list[tuple[str, str, Severity, Any]]:
    import great_expectations.expectations as gxe

    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    suite: list[tuple[str, str, Severity, Any]] = [
        ("row count", f"the dataset must have {v.min_rows}..{v.max_rows} rows", "error",
         gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows)),
        ("text not null", f"'{text}' must not be null", "error", gxe.ExpectColumnValuesToNotBeNull(column=text)),
        ("label not null", f"'{label}' must not be null", "error", gxe.ExpectColumnValuesToNotBeNull(column=label)),
        ("text not blank", f"'{text}' must contain more than whitespace", "error",
         gxe.ExpectColumnValuesToNotMatchRegex(column=text, regex=r"^\s*$")),
        ("text length", f"'{text}' must be {v.min_text_chars}..{v.max_text_chars} characters", "error",
         gxe.ExpectColumnValueLengthsToBeBetween(column=text, min_value=v.min_text_chars,
                                                 max_value=v.max_text_chars)),
        ("control characters", f"'{text}' must not hold control characters or U+FFFD (broken encoding)", "error",
         gxe.ExpectColumnValuesToNotMatchRegex(column=text, regex=CONTROL_CHARS)),
        ("duplicate texts", f"'{text}' values should be unique (policy: {v.duplicates})",
         "error" if v.duplicates == "fail" else "warning", gxe.ExpectColumnValuesToBeUnique(column=text)),
    ]
    if v.allowed_labels is not None:
        suite.append(("labels allowed", f"'{label}' must be one of the {len(v.allowed_labels)} allowed labels",
                      "error", gxe.ExpectColumnValuesToBeInSet(column=label, value_set=v.allowed_labels)))
    return suite


def _run_gx(frame: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None,
            named: list[tuple[str, str, Severity, Any]] | None = None) -> tuple[list[Check], str | None]:
    """Run the suite (default: the classification contract) as a GX checkpoint; Data Docs into ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    named = named or _gx_suite(cfg)
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
        docs = _build_data_docs(run, docs_dir)

    by_id = {r.expectation_config.id: r for r in run.results}
    checks = []
    for name, detail, severity, expectation in named:
        r = by_id[expectation.id]
        res = r.result or {}
        examples = [_show(x) for x in (res.get("partial_unexpected_list") or [])[:EXAMPLES] if not pd.isna(x)]
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail = f"{detail}; check could not run: {r.exception_info.get('exception_message')}"
        if name == "row count":
            detail = f"{detail}; it has {res.get('observed_value')}"
        checks.append(Check(name, bool(r.success), int(res.get("unexpected_count") or 0), examples, detail,
                            severity))
    return checks, docs


def _build_data_docs(run: Any, docs_dir: Path) -> str | None:
    """Render the validation result as Great Expectations Data Docs (static HTML) under ``docs_dir``."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    assert isinstance(run, ExpectationSuiteValidationResult)
    for result in run.results:  # examples in the HTML are masked like every other report
        details = result.result or {}
        if details.get("partial_unexpected_list"):
            details["partial_unexpected_list"] = [_show(x) for x in details["partial_unexpected_list"]]
        for key in ("partial_unexpected_index_list", "partial_unexpected_counts", "unexpected_list"):
            details.pop(key, None)
    document = ValidationResultsPageRenderer().render(run)
    html = DefaultJinjaPageView().render(document)
    docs_dir.mkdir(parents=True, exist_ok=True)
    path = docs_dir / "index.html"
    path.write_text(html)
    return str(path)


# ----------------------------------------------------------------------------- pandas checks


def _token_report(texts: pd.Series, cfg: TuneopsConfig) -> Check:
    """How many rows the tokenizer would truncate at model.max_length (on a sample of large data)."""
    from transformers import AutoTokenizer

    from tuneops.models import resolve_base

    sample = texts.dropna().astype(str)
    if sample.empty:
        return Check("token length", True, 0, [], "not measured: no texts", "info")
    sampled = len(sample) > TOKEN_SAMPLE
    if sampled:
        sample = sample.sample(TOKEN_SAMPLE, random_state=0)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_base(cfg.model.base))
    except (OSError, ValueError) as exc:
        return Check("token length", True, 0, [], f"not measured: tokenizer of {cfg.model.base} did not load ({exc})",
                     "info")
    lengths = pd.Series([len(ids) for ids in tokenizer(sample.tolist(), add_special_tokens=True)["input_ids"]],
                        index=sample.index)
    over = lengths[lengths > cfg.model.max_length]
    share = len(over) / max(len(lengths), 1)
    scope = f"a sample of {len(sample)} rows" if sampled else f"all {len(sample)} rows"
    detail = (f"{share:.2%} of {scope} exceed model.max_length={cfg.model.max_length} tokens and will be "
              f"truncated; longest {int(lengths.max())}, median {int(lengths.median())}")
    return Check("token length", True, len(over), _examples(sample.loc[over.index]), detail, "info")


def _pandas_checks(frame: pd.DataFrame, cfg: TuneopsConfig) -> list[Check]:
    text, label, v = cfg.data.text_column, cfg.data.label_column, cfg.validation
    checks = []
    counts = frame[label].dropna().value_counts()
    small = counts[counts < v.min_rows_per_class]
    checks.append(Check("rows per class", small.empty, int(small.sum()),
                        [f"{k!r}: {n} rows" for k, n in small.head(EXAMPLES).items()],
                        f"every label needs at least {v.min_rows_per_class} rows"
                        + (f"; {len(small)} labels have fewer" if len(small) else "")))
    checks.append(Check("at least two classes", len(counts) >= 2, 0, [],
                        f"found {len(counts)} distinct label(s); a classifier needs two or more"))
    if len(counts) >= 2:
        ratio = counts.iloc[0] / counts.iloc[-1]
        ok = ratio <= v.max_class_imbalance
        checks.append(Check("class imbalance", ok, 0,
                            [] if ok else [f"{counts.index[0]!r}: {counts.iloc[0]} rows vs {counts.index[-1]!r}: "
                                           f"{counts.iloc[-1]} rows"],
                            f"most/least frequent label ratio is {ratio:.1f}; the limit is {v.max_class_imbalance:g}"))

    valid = frame.dropna(subset=[text, label])
    norm = normalise(valid[text])
    labels_per_text = valid[label].groupby(norm.to_numpy()).nunique()
    conflicted = labels_per_text[labels_per_text > 1]
    conflict_rows = norm.isin(conflicted.index)
    examples = []
    for key in conflicted.index[:EXAMPLES]:
        rows = valid[(norm == key).to_numpy()]
        examples.append(f"{_show(rows[text].iloc[0])} labelled {sorted(rows[label].astype(str).unique())}")
    checks.append(Check("conflicting labels", conflicted.empty, int(conflict_rows.sum()), examples,
                        "the same (normalised) text must not carry different labels"
                        + (f"; {len(conflicted)} texts do" if len(conflicted) else "")))

    kinds = pii.scan(frame[text])
    flagged = kinds[kinds != ""]
    severity: Severity = "error" if v.pii_policy == "fail" else "warning"
    action = {"fail": "remove it from the data or set validation.pii_policy: redact",
              "redact": "it is masked before training", "warn": "it is kept in the training data"}[v.pii_policy]
    found = ", ".join(f"{k}: {n}" for k, n in flagged.str.split(",").explode().value_counts().items())
    checks.append(Check("personal data", flagged.empty, len(flagged), _examples(frame.loc[flagged.index, text]),
                        f"texts must not hold e-mail addresses, phone numbers, IBANs or card numbers "
                        f"(policy: {v.pii_policy}; {action})" + (f"; found {found}" if found else ""), severity))
    checks.append(_token_report(frame[text], cfg))
    return checks


def validate_frame(df: pd.DataFrame, cfg: TuneopsConfig, docs_dir: Path | None = None) -> ValidationReport:
    """Run every check of the contract on a dataset (plain function; the task wraps it)."""
    if cfg.model.task == "causal_lm":
        from tasks.validation_causal import validate_causal_frame

        return validate_causal_frame(df, cfg, docs_dir)
    d = cfg.data
    required = [c for c in (d.text_column, d.label_column, d.id_column, d.group_column, d.timestamp_column,
                            *cfg.gate.slice_columns) if c]
    missing = [c for c in required if c not in df.columns]
    checks = [Check("required columns", not missing, 0, [],
                    f"missing column(s) {', '.join(repr(m) for m in missing)}; found {list(df.columns)}; set "
                    "data.text_column / data.label_column to the right names" if missing
                    else f"{', '.join(repr(c) for c in required)} present")]
    if missing or df.empty:
        if df.empty:
            checks.append(Check("row count", False, 0, [], f"the dataset has no rows (header only?); columns: "
                                                            f"{list(df.columns)}"))
        return ValidationReport(len(df), checks)

    text, label = d.text_column, d.label_column
    wrong_type = df[text].map(lambda x: not isinstance(x, str) and not pd.isna(x))
    checks.append(Check("text type", not wrong_type.any(), int(wrong_type.sum()),
                        _examples(df.loc[wrong_type, text]), f"'{text}' must hold strings"))
    if d.timestamp_column:
        stamps = pd.to_datetime(df[d.timestamp_column], errors="coerce", utc=True)
        bad = stamps.isna()
        checks.append(Check("timestamps", not bad.any(), int(bad.sum()), _examples(df.loc[bad, d.timestamp_column]),
                            f"'{d.timestamp_column}' must hold parseable dates"))
    frame = df[[text, label]].copy()
    frame[text] = frame[text].where(frame[text].isna(), frame[text].astype(str))
    frame[label] = frame[label].where(frame[label].isna(), frame[label].astype(str))
    gx_checks, docs = _run_gx(frame, cfg, docs_dir)
    return ValidationReport(len(df), checks + gx_checks + _pandas_checks(frame, cfg), docs)


def redact(df: pd.DataFrame, cfg: TuneopsConfig) -> pd.DataFrame:
    """Mask personal data in the text column (validation.pii_policy: redact)."""
    text = cfg.data.text_column
    kinds = pii.scan(df[text])
    flagged = kinds != ""
    if not flagged.any():
        return df
    df = df.copy()
    df.loc[flagged, text] = df.loc[flagged, text].map(pii.mask)
    return df


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(df: pd.DataFrame, cfg: TuneopsConfig, run_id: str) -> pd.DataFrame:
    """Validate the dataset, record the report, stop the flow if it failed; return the data to train on."""
    from tuneops import tracking

    with tempfile.TemporaryDirectory() as tmp:
        report = validate_frame(df, cfg, Path(tmp) / "data_docs")
        if report.data_docs:
            tracking.log_artifacts(run_id, Path(report.data_docs).parent, "validation/data_docs")
    tracking.log_text(run_id, report.to_json(), "validation/report.json")
    tracking.log_text(run_id, report.to_markdown(), "validation/report.md")
    tracking.set_tags(run_id, {"tuneops.validation.passed": report.passed,
                               "tuneops.validation.warnings": len(report.warnings())})
    create_markdown_artifact(report.to_markdown(), key="data-validation",
                             description="Great Expectations checks on the training data")
    if not report.passed:
        raise DataError(report.summary())
    if cfg.model.task == "causal_lm":
        from tasks.validation_causal import prepare_causal

        return prepare_causal(df, cfg)
    return redact(df, cfg) if cfg.validation.pii_policy == "redact" else df
