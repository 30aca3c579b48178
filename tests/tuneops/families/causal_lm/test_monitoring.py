"""A generator's answers are monitored: length, empty and cut-off answers, JSON validity, the labels they name."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import MINILM, ROOT
from tuneops.config import MonitoringConfig, validate_config
from tuneops.errors import DataError
from tuneops.families.causal_lm import response_drift
from tuneops.monitoring.drift import check_drift

DATA = {"path": "x.csv", "prompt_column": "prompt", "response_column": "response"}


def _config(response_format: str):
    return validate_config({"data": DATA, "model": {"task": "causal_lm", "response_format": response_format}})


def _log(prompts: pd.Series, responses: list[str], cut_every: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "text": prompts.to_numpy(), "response": responses,
        "response_tokens": [len(r.split()) * 3 for r in responses],
        "finish_reason": ["length" if cut_every and i % cut_every == 0 else "stop" for i in range(len(responses))]})


@pytest.fixture(scope="module")
def nlupp() -> pd.DataFrame:
    frame = pd.read_json(ROOT / "data/nlupp/banking.jsonl", lines=True).sample(frac=1, random_state=0)
    frame["answer"] = frame.intents.map(json.dumps)
    return frame.reset_index(drop=True)


def test_json_list_answers_compare_validity_and_exploded_labels(nlupp):
    ref = _log(nlupp.text.iloc[:300], nlupp.answer.iloc[:300].tolist())
    comparisons = response_drift(ref, ref, _config("json_list"))
    assert [set(c.methods) for c in comparisons] == [
        {"response_tokens", "empty_response", "cut_off", "json_valid"}, {"response_labels"}]
    labels = comparisons[1].reference
    assert len(labels) == sum(max(len(i), 1) for i in nlupp.intents.iloc[:300])  # one row per named label
    assert set(labels.label) <= {i for v in nlupp.intents for i in v} | {"<none>"}
    label_only = response_drift(ref, ref, _config("label"))
    assert [set(c.methods) for c in label_only][0] == {"response_tokens", "empty_response", "cut_off"}
    assert [set(c.methods) for c in response_drift(ref, ref, _config("text"))] == [
        {"response_tokens", "empty_response", "cut_off"}]
    with pytest.raises(DataError, match="prediction log lacks column.*finish_reason"):
        response_drift(ref, ref.drop(columns="finish_reason"), _config("json_list"))


def test_broken_answers_drift_while_the_same_answers_stay_quiet(nlupp):
    """Same prompts, so only the answer signals can move: a model that starts emitting cut-off, non-JSON answers."""
    cfg = MonitoringConfig(embedding_sample=0, min_rows=100)
    reference = _log(nlupp.text.iloc[:400], nlupp.answer.iloc[:400].tolist())
    same = _log(nlupp.text.iloc[400:700], nlupp.answer.iloc[400:700].tolist())
    quiet = check_drift(reference, same, cfg, MINILM, response_drift(reference, same, _config("json_list")))
    assert not quiet.drift, quiet.drifting
    broken_answers = [a[: len(a) // 2] if i % 2 else a for i, a in enumerate(nlupp.answer.iloc[400:700])]
    broken = _log(nlupp.text.iloc[400:700], broken_answers, cut_every=2)
    loud = check_drift(reference, broken, cfg, MINILM, response_drift(reference, broken, _config("json_list")))
    assert {"json_valid", "cut_off", "response_labels"} <= set(loud.drifting), loud.summary()
    assert not loud.signals["text"].drift  # the prompts did not change
