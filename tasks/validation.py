"""Check the dataset against its contract with Great Expectations, before any compute is spent.

The suite is built from the config (columns, text length bounds, allowed labels); checks that
Great Expectations has no expectation for (rows per class) are computed with pandas and
reported in the same shape, so a reader sees one list of named checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops.config import TuneopsConfig
from tuneops.errors import DataError

EXAMPLES = 3


@dataclass
class Check:
    """One named check: whether it passed, how many rows failed it, and a few examples."""

    name: str
    passed: bool
    failing_rows: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class ValidationReport:
    """Every check run on a dataset; ``passed`` only if all passed."""

    rows: int
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """A paragraph per failed check, for the error message a user reads."""
        lines = [f"data validation failed: {len(self.failures())} of {len(self.checks)} checks on "
                 f"{self.rows} rows"]
        for c in self.failures():
            lines.append(f"  - {c.name}: {c.detail}" + (f" ({c.failing_rows} rows)" if c.failing_rows else ""))
            lines += [f"      e.g. {e}" for e in c.examples]
        lines.append("Fix the data (or the validation section of the config) and run again; nothing was trained.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        status = "passed" if self.passed else "FAILED"
        out = [f"# Data validation {status}", "", f"{self.rows} rows, {len(self.checks)} checks.", "",
               "| check | result | failing rows | detail |", "|---|---|---|---|"]
        for c in self.checks:
            out.append(f"| {c.name} | {'ok' if c.passed else 'FAIL'} | {c.failing_rows} | {c.detail} |")
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "passed": self.passed, "checks": [asdict(c) for c in self.checks]},
                          indent=2)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


def _gx_checks(df: pd.DataFrame, cfg: TuneopsConfig) -> list[Check]:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    text, label = cfg.data.text_column, cfg.data.label_column
    v = cfg.validation
    named: list[tuple[str, str, Any]] = [
        ("text not null", f"'{text}' must not be null", gxe.ExpectColumnValuesToNotBeNull(column=text)),
        ("label not null", f"'{label}' must not be null", gxe.ExpectColumnValuesToNotBeNull(column=label)),
        ("text not blank", f"'{text}' must contain more than whitespace",
         gxe.ExpectColumnValuesToNotMatchRegex(column=text, regex=r"^\s*$")),
        ("text length", f"'{text}' must be {v.min_text_chars}..{v.max_text_chars} characters",
         gxe.ExpectColumnValueLengthsToBeBetween(column=text, min_value=v.min_text_chars,
                                                 max_value=v.max_text_chars)),
    ]
    if v.allowed_labels is not None:
        named.append(("labels allowed", f"'{label}' must be one of the {len(v.allowed_labels)} allowed labels",
                      gxe.ExpectColumnValuesToBeInSet(column=label, value_set=v.allowed_labels)))

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("tuneops").add_dataframe_asset("dataset")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df}))
    suite = context.suites.add(gx.ExpectationSuite(name="dataset-contract"))
    for _, _, expectation in named:
        suite.add_expectation(expectation)
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES})

    by_type = {}
    for r in result.results:
        by_type[(r.expectation_config.type, r.expectation_config.kwargs.get("column"))] = r
    checks = []
    for name, detail, expectation in named:
        r = by_type[(expectation.expectation_type, expectation.column)]
        res = r.result or {}
        examples = [_show(x) for x in (res.get("partial_unexpected_list") or [])[:EXAMPLES] if not pd.isna(x)]
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail = f"{detail}; check could not run: {r.exception_info.get('exception_message')}"
        checks.append(Check(name, bool(r.success), int(res.get("unexpected_count") or 0), examples,
                            detail))
    return checks


def validate_frame(df: pd.DataFrame, cfg: TuneopsConfig) -> ValidationReport:
    """Run the contract's checks on a dataset (plain function; the task wraps it)."""
    text, label = cfg.data.text_column, cfg.data.label_column
    missing = [c for c in (text, label) if c not in df.columns]
    checks = [Check("required columns", not missing, 0, [],
                    f"missing column(s) {', '.join(repr(m) for m in missing)}; found {list(df.columns)}"
                    if missing else f"'{text}' and '{label}' present")]
    checks.append(Check("row count", len(df) > 0, 0, [],
                        "the dataset has no rows" if len(df) == 0 else f"{len(df)} rows"))
    if missing or df.empty:
        return ValidationReport(len(df), checks)

    wrong_type = df[text].map(lambda x: x is not None and not isinstance(x, str) and not pd.isna(x))
    checks.append(Check("text type", not wrong_type.any(), int(wrong_type.sum()),
                        [_show(x) for x in df.loc[wrong_type, text].head(EXAMPLES)],
                        f"'{text}' must hold strings"))
    frame = df[[text, label]].copy()
    frame[text] = frame[text].where(frame[text].isna(), frame[text].astype(str))
    frame[label] = frame[label].where(frame[label].isna(), frame[label].astype(str))
    checks += _gx_checks(frame, cfg)

    counts = frame[label].dropna().value_counts()
    small = counts[counts < cfg.validation.min_rows_per_class]
    checks.append(Check("rows per class", small.empty, int(small.sum()),
                        [f"{k!r}: {v} rows" for k, v in small.head(EXAMPLES).items()],
                        f"every label needs at least {cfg.validation.min_rows_per_class} rows"
                        + (f"; {len(small)} labels have fewer" if len(small) else "")))
    checks.append(Check("at least two classes", len(counts) >= 2, 0, [],
                        f"found {len(counts)} distinct label(s); a classifier needs two or more"))
    return ValidationReport(len(df), checks)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(df: pd.DataFrame, cfg: TuneopsConfig, run_id: str) -> ValidationReport:
    """Validate the dataset, record the report (MLflow + Prefect), and stop the flow if it failed."""
    from tuneops import tracking

    report = validate_frame(df, cfg)
    tracking.log_text(run_id, report.to_json(), "validation/report.json")
    tracking.log_text(run_id, report.to_markdown(), "validation/report.md")
    create_markdown_artifact(report.to_markdown(), key="data-validation",
                             description="Great Expectations checks on the training data")
    if not report.passed:
        raise DataError(report.summary())
    return report
