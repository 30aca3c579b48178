"""The bad-input corpus: each malformed dataset stops train_model before training, with its own
message, and leaves the registry unchanged. Run through the real flow (Prefect test server,
SQLite MLflow), local files and a real S3-compatible server on loopback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, make_bucket, tiny_config
from tuneops.errors import DataError

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LABELS = ["activate_my_card", "card_arrival", "change_pin", "exchange_rate"]


def good() -> pd.DataFrame:
    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    return df[df.category.isin(LABELS)].groupby("category").head(30).reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: Path) -> str:
    df.to_csv(path, index=False)
    return str(path)


@dataclass
class Case:
    name: str
    make: Callable[[Path], str]
    expect: str
    config: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    s3: bool = False


def _with(df_change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], str]:
    return lambda tmp: write_csv(df_change(good()), tmp / "data.csv")


def _set(df: pd.DataFrame, rows: slice, column: str, value) -> pd.DataFrame:  # noqa: ANN001
    df = df.copy()
    df.loc[df.index[rows], column] = value
    return df


def _raw(content: bytes, name: str = "data.csv") -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / name).write_bytes(content)
        return str(tmp / name)
    return make


def _mixed_folder(tmp: Path) -> str:
    folder = tmp / "exports"
    folder.mkdir()
    df = good()
    df.iloc[:60].to_csv(folder / "a.csv", index=False)
    df.iloc[60:].rename(columns={"text": "query"}).to_csv(folder / "b.csv", index=False)
    return str(folder)


def _truncated_jsonl(tmp: Path) -> str:
    lines = good().to_json(orient="records", lines=True).splitlines()
    lines[40] = lines[40][:25]
    (tmp / "data.jsonl").write_text("\n".join(lines) + "\n")
    return str(tmp / "data.jsonl")


def _numbers_as_text(tmp: Path) -> str:
    df = good()
    df["text"] = df["text"].astype(object)
    df.loc[:4, "text"] = [1, 2, 3, 4, 5]
    df.to_json(tmp / "data.jsonl", orient="records", lines=True)
    return str(tmp / "data.jsonl")


def _latin1(tmp: Path) -> str:
    df = _set(good(), slice(0, 1), "text", "Can I pay in café with my card?")
    (tmp / "data.csv").write_bytes(df.to_csv(index=False).encode("latin-1"))
    return str(tmp / "data.csv")


def _bom(tmp: Path) -> str:
    (tmp / "data.csv").write_bytes(b"\xef\xbb\xbf" + good().to_csv(index=False).encode())
    return str(tmp / "data.csv")


def _conflicts(df: pd.DataFrame) -> pd.DataFrame:
    dup = df.iloc[:3].copy()
    dup["category"] = "exchange_rate"
    dup["text"] = dup["text"].str.upper() + "  "
    return pd.concat([df, dup], ignore_index=True)


def _s3_upload(key: str, df: pd.DataFrame | None) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        from tuneops.data.storage import s3_client

        make_bucket("corpus")
        if df is not None:
            s3_client().put_object(Bucket="corpus", Key=key, Body=df.to_csv(index=False).encode())
        return f"s3://corpus/{key}"
    return make


LANGUAGE_MODELING = {"model": {"task": "language_modeling"}, "gate": {"floors": {}}}

CASES = [
    Case("missing column", _with(lambda d: d.drop(columns="category")), r"required columns: missing column\(s\) "
         r"'category'"),
    Case("wrong type", _numbers_as_text, r"text type: 'text' must hold strings \(5 rows\)"),
    Case("empty file", _raw(b""), r"data.csv is empty \(0 bytes of data\)"),
    Case("header only", _raw(b"text,category\n"), r"row count: the dataset has no rows \(header only\?\)"),
    Case("all-null text", _with(lambda d: d.assign(text=None)), r"text not null: 'text' must not be null \(120 rows\)"),
    Case("BOM", _bom, r"starts with a UTF-8 byte-order mark"),
    Case("latin-1", _latin1, r"is not UTF-8 \(byte 0xe9 .*latin-1"),
    Case("truncated JSONL", _truncated_jsonl, r"data.jsonl line 41 is not valid JSON .*truncated"),
    Case("mixed schemas", _mixed_folder, r"have different columns: a.csv has \['category', 'text'\], b.csv has "
         r"\['category', 'query'\]"),
    Case("unknown labels", _with(lambda d: d), r"labels allowed: 'category' must be one of the 3 allowed labels "
         r"\(30 rows\)", config={"validation": {"allowed_labels": LABELS[:3]}}),
    Case("single class", _with(lambda d: d.assign(category="card_arrival")), r"at least two classes: found 1"),
    Case("conflicting duplicates", _with(_conflicts), r"conflicting labels: .*3 texts do \(6 rows\)"),
    Case("PII under fail policy", _with(lambda d: _set(d, slice(0, 2), "text", "mail me at jane.roe@example.com")),
         r"personal data: .*found email: 2 \(2 rows\)\n.*\[EMAIL\]"),
    Case("card number (Luhn)", _with(lambda d: _set(d, slice(5, 6), "text", "my card 4539 1488 0343 6467 failed")),
         r"personal data: .*found card: 1"),
    Case("1 MB text cell", _with(lambda d: _set(d, slice(0, 1), "text", "a" * 1_000_000)),
         r"text length: 'text' must be 2..1000 characters \(1 rows\)",
         config={"validation": {"min_text_chars": 2, "max_text_chars": 1000}}),
    Case("blank texts", _with(lambda d: _set(d, slice(0, 4), "text", "   ")), r"text not blank: .* \(4 rows\)"),
    Case("control characters", _with(lambda d: _set(d, slice(0, 2), "text", "card\x1b[31m not working")),
         r"control characters: .* \(2 rows\)"),
    Case("replacement character", _with(lambda d: _set(d, slice(0, 1), "text", "caf\ufffd card")),
         r"control characters: .*broken encoding\) \(1 rows\)"),
    Case("too few rows per class", _with(lambda d: d.iloc[:95]), r"rows per class: .*1 labels have fewer"),
    Case("row count bounds", _with(lambda d: d), r"row count: the dataset must have 200..1000 rows; it has 120",
         config={"validation": {"min_rows": 200, "max_rows": 1000}}),
    Case("class imbalance", _with(lambda d: pd.concat([d] + [d[d.category == "card_arrival"]] * 4)),
         r"class imbalance: most/least frequent label ratio is 5.0; the limit is 2",
         config={"validation": {"max_class_imbalance": 2, "duplicates": "warn"}}),
    Case("duplicates under fail policy", _with(lambda d: pd.concat([d, d.iloc[:2]])),
         r"duplicate texts: .*policy: fail\) \(4 rows\)", config={"validation": {"duplicates": "fail"}}),
    Case("text too short", _with(lambda d: _set(d, slice(0, 3), "text", "ok")),
         r"text length: .*must be 5..2000 .* \(3 rows\)",
         config={"validation": {"min_text_chars": 5}}),
    Case("bad timestamps", _with(lambda d: d.assign(ts=["2026-01-01"] * 118 + ["yesterday", "soon"])),
         r"timestamps: 'ts' must hold parseable dates \(2 rows\)",
         config={"data": {"timestamp_column": "ts"}, "split": {"strategy": "time"}}),
    Case("unparseable CSV", _raw(b'text,category\n"unclosed quote,card_arrival\nok,change_pin\n'),
         r"cannot be parsed as CSV"),
    Case("missing path", lambda tmp: str(tmp / "nope.csv"), r"nope.csv does not exist"),
    Case("unsupported format", _raw(b"PK\x03\x04", "data.xlsx"),
         r"has extension '.xlsx'; use .csv, .jsonl or .parquet"),
    Case("folder without data files", lambda tmp: (tmp / "README.md").write_text("x") and str(tmp),
         r"holds no .csv, .jsonl or .parquet files \(found README.md\)"),
    Case("path outside allowed roots", _with(lambda d: d), r"outside the allowed data roots",
         env={"TUNEOPS_DATA_ROOTS": "/srv/company-data"}),
    Case("empty S3 prefix", _s3_upload("empty/", None), r"s3://corpus/empty/ matches no .*the prefix is empty",
         s3=True),
    Case("missing S3 object", _s3_upload("exports/missing.csv", None),
         r"s3://corpus/exports/missing.csv does not exist", s3=True),
    # model.task language_modeling: one text column, no labels (tuneops/families/language_modeling/__init__.py)
    Case("corpus without its text column", _with(lambda d: d.rename(columns={"text": "query"})),
         r"required columns: missing column\(s\) 'text'; found \['query', 'category'\]; set data.text_column",
         config=LANGUAGE_MODELING),
    Case("blank corpus texts", _with(lambda d: _set(d, slice(0, 5), "text", " ")),
         r"text not blank: every text must contain more than whitespace \(5 rows\)", config=LANGUAGE_MODELING),
    Case("unreadable exclusion config", _with(lambda d: d),
         r"supervised test texts excluded: language_modeling.exclude_test_of cannot be read: .*nope.yaml does not "
         r"exist", config={**LANGUAGE_MODELING, "language_modeling": {"exclude_test_of": ["nope.yaml"]}}),
    Case("missing S3 bucket", lambda tmp: "s3://no-such-bucket/data.csv", r"bucket of s3://no-such-bucket/data.csv "
         r"does not exist", s3=True),
]


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.expect for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_stops_before_training(case: Case, prefect_server, tiny_model, tmp_path, monkeypatch, request):
    from tuneops.flows.train_model import train_model

    if case.s3:
        request.getfixturevalue("s3_endpoint")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    name = "corpus-" + case.name.replace(" ", "-").replace("(", "").replace(")", "")
    cfg = tiny_config(case.make(tmp_path), tiny_model, name, **case.config)
    with pytest.raises(DataError, match=case.expect):
        train_model(config=cfg)
    assert MlflowClient().search_model_versions(f"name = '{name}'") == []
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string=f"attributes.run_name = '{name}'",
                              output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "train_seconds" not in runs[0].data.metrics


def test_failed_validation_report_is_recorded_and_masked(prefect_server, tiny_model, tmp_path):
    """The full report lands on the MLflow run (JSON, markdown, Data Docs HTML) with PII masked."""
    from tuneops.flows.train_model import train_model

    df = _set(good(), slice(0, 2), "text", "write to jane.roe@example.com")
    cfg = tiny_config(write_csv(df, tmp_path / "d.csv"), tiny_model, "corpus-report")
    with pytest.raises(DataError) as err:
        train_model(config=cfg)
    assert "jane.roe" not in str(err.value)
    run = mlflow.search_runs(experiment_names=["tests"], filter_string="attributes.run_name = 'corpus-report'",
                             output_format="list")[0]
    client = MlflowClient()
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert {"validation/report.json", "validation/report.md", "validation/data_docs"} <= paths
    local = Path(client.download_artifacts(run.info.run_id, "validation"))
    for file in [local / "report.json", local / "report.md", local / "data_docs/index.html"]:
        content = file.read_text()
        assert "jane.roe" not in content, f"{file.name} leaks personal data"
    assert "[EMAIL]" in (local / "report.md").read_text()
    assert "<html" in (local / "data_docs/index.html").read_text().lower()


def test_bottleneck_modules_the_base_lacks_stop_the_run_before_training(prefect_server, tiny_model, tmp_path):
    """A bottleneck config whose insertion patterns match no layer of the base model fails with the base's layer
    names and the setting to change, before any training step, and registers nothing."""
    from tuneops.errors import ConfigError
    from tuneops.flows.train_model import train_model

    name = "corpus-bottleneck-modules"
    cfg = tiny_config(write_csv(good(), tmp_path / "d.csv"), tiny_model, name, training={
        "method": "bottleneck", "bottleneck": {"placement": "pfeiffer", "feedforward_modules": [r"mlp\.fc_out"]}})
    with pytest.raises(ConfigError, match=r"no module of the base model \(BertForSequenceClassification\) matches "
                       r"feedforward_modules .*its linear layers are named like \['bert.encoder.layer.0.attention"
                       r".*set training.bottleneck.feedforward_modules"):
        train_model(config=cfg)
    assert MlflowClient().search_model_versions(f"name = '{name}'") == []
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string=f"attributes.run_name = '{name}'",
                              output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FAILED" and "train_seconds" not in runs[0].data.metrics


# ----------------------------------------------------------------------- preference pairs (model.task: preference)


def good_pairs() -> pd.DataFrame:
    """Prompts with the right intent as chosen and the next intent as rejected."""
    df = good()
    names = df.category.str.replace("_", " ")
    wrong = df.category.map(lambda c: LABELS[(LABELS.index(c) + 1) % 4].replace("_", " "))
    return pd.DataFrame({"prompt": "Which intent: " + df.text, "chosen": names, "rejected": wrong})


def _pairs_with(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], str]:
    return lambda tmp: write_csv(change(good_pairs()), tmp / "pairs.csv")


PREFERENCE_CASES = [
    Case("chosen equals rejected", _pairs_with(lambda d: _set(d, slice(0, 3), "rejected", d.chosen.iloc[0])
                                               .pipe(_set, slice(0, 3), "chosen", d.chosen.iloc[0])),
         r"chosen differs from rejected: the chosen and the rejected answer of a pair must differ .* \(3 rows\)"),
    Case("missing rejected column", _pairs_with(lambda d: d.drop(columns="rejected")),
         r"required columns: missing column\(s\) 'rejected'; .*data.rejected_column"),
    Case("empty answers", _pairs_with(lambda d: _set(d, slice(0, 2), "chosen", "  ")),
         r"chosen not blank: every chosen must contain more than whitespace .* \(2 rows\)"),
    Case("empty rejected answers", _pairs_with(lambda d: _set(d, slice(4, 9), "rejected", None)),
         r"rejected not null: every pair needs a rejected \(5 rows\)"),
    Case("personal data in an answer", _pairs_with(lambda d: _set(d, slice(0, 1), "rejected", "call +44 20 7946 0958")),
         r"personal data: prompts and answers must not hold"),
    Case("duplicate prompts under fail policy", _pairs_with(lambda d: pd.concat([d, d.iloc[:2]])),
         r"duplicate prompts: each prompt should have one pair \(policy: fail\) \(4 rows\)",
         config={"validation": {"duplicates": "fail"}}),
    Case("supervised task config missing", _pairs_with(lambda d: d), r"supervised task: preference.task_config "
         r"nope.yaml does not load: config file nope.yaml does not exist",
         config={"preference": {"task_config": "nope.yaml"}}),
]


def preference_case_config(case: Case, data: str, base: str, task_yaml: str, name: str):
    from tuneops.config import validate_config

    raw = {"data": {"path": data, "prompt_column": "prompt", "chosen_column": "chosen",
                    "rejected_column": "rejected"},
           "model": {"base": base, "task": "preference", "max_length": 48, "max_new_tokens": 6},
           "preference": {"task_config": task_yaml},
           "registry": {"model_name": name, "experiment": "tests"}}
    for section, values in case.config.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


@pytest.mark.parametrize("case", PREFERENCE_CASES, ids=lambda c: c.name)
def test_bad_preference_data_stops_before_training(case: Case, prefect_server, tiny_causal_lm, tmp_path):
    """Bad pairs stop the run at validation (before any training) with their own message; nothing registered."""
    import yaml

    from tests.conftest import causal_config
    from tuneops.flows.train_model import train_model

    task = causal_config(write_csv(good_pairs().rename(columns={"chosen": "response"}), tmp_path / "task.csv"),
                         tiny_causal_lm, "corpus-task", model={"base": tiny_causal_lm, "task": "causal_lm",
                                                               "max_length": 48, "max_new_tokens": 6})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task.model_dump(mode="json")))
    name = "corpus-pref-" + case.name.replace(" ", "-")
    cfg = preference_case_config(case, case.make(tmp_path), tiny_causal_lm, str(tmp_path / "task.yaml"), name)
    with pytest.raises(DataError, match=case.expect):
        train_model(config=cfg)
    assert MlflowClient().search_model_versions(f"name = '{name}'") == []
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string=f"attributes.run_name = '{name}'",
                              output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "train_seconds" not in runs[0].data.metrics
