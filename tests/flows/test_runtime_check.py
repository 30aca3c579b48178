"""The runtime agreement check on the shared trained champion, in a real SQLite MLflow registry: int8 and ONNX
agree with fp32 on its validation split and are recorded as tags (a second load reads them), a runtime that
disagrees is refused with its figures, and serving.runtime: auto picks from what the checks recorded.

(Here rather than in tests/tuneops/: it needs the trained, registered champion the flow tests share.)"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import tiny_config
from tuneops.registry import versions as registry
from tuneops.serving import runtime_check, runtimes
from tuneops.serving.runtimes import Runtime, RuntimeRefused
from tuneops.serving.scoring import load_verified

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _config(champion, tiny_model, company_csv, **serving):
    return tiny_config(company_csv, tiny_model, champion, serving=serving)


def test_int8_and_onnx_pass_are_recorded_and_reused(champion, tiny_model, company_csv, monkeypatch):
    version = registry.alias_version(champion, "champion")
    for name in ("int8", "onnx"):
        cfg = _config(champion, tiny_model, company_csv, runtime=name)
        model, used = load_verified(cfg, version)
        assert used == name and model.unwrap_python_model().classifier.runtime == name  # really runs on it
        found = runtime_check.recorded(champion, version, name)
        assert found is not None and found.passed and found.kind == "label" and found.rows > 0
        assert found.agreement >= 0.995 and found.max_confidence_diff <= cfg.serving.runtime_confidence_tolerance
        assert found.rows_per_s > 0 and found.reference_rows_per_s > 0
        assert len(model.predict(pd.DataFrame({"text": ["change my pin"]}))) == 1

    # A second load reads the tags: measuring again would fail here.
    def no_second_check(*args, **kwargs):
        raise AssertionError("the recorded check should have been reused")

    monkeypatch.setattr(runtime_check, "measure", no_second_check)
    load_verified(_config(champion, tiny_model, company_csv, runtime="int8"), version)

    # auto: the fastest runtime that passed (by the speed-ups the checks measured), fp32 if none is faster.
    passed = {n: runtime_check.recorded(champion, version, n) for n in ("int8", "onnx")}
    speedups = {n: a.rows_per_s / a.reference_rows_per_s for n, a in passed.items()}
    best = max(speedups, key=speedups.get)
    expected = best if speedups[best] > 1 else "fp32"
    assert runtime_check.choose(_config(champion, tiny_model, company_csv, runtime="auto"), version) == expected
    # Records measured under other thresholds do not count: with none under these, auto serves fp32.
    stricter = _config(champion, tiny_model, company_csv, runtime="auto", runtime_min_label_agreement=0.999)
    assert runtime_check.choose(stricter, version) == "fp32"


def test_a_runtime_that_disagrees_with_fp32_is_refused_with_its_figures(champion, tiny_model, company_csv,
                                                                         monkeypatch):
    def flipped(model, tokenizer, model_dir):  # a broken runtime: the least likely label instead of the most
        return lambda enc: -model(**enc).logits

    monkeypatch.setitem(runtimes.RUNTIMES, "broken", Runtime("broken", "test only", classifier=flipped))
    version = registry.alias_version(champion, "champion")
    cfg = _config(champion, tiny_model, company_csv, runtime="broken")
    with pytest.raises(RuntimeRefused, match=r"runtime broken failed its agreement check with fp32 on "
                       r".*same label on \d+\.\d+% of \d+ validation rows \(needs 99\.50%\).*serving.runtime: fp32"):
        load_verified(cfg, version)
    found = runtime_check.recorded(champion, version, "broken")
    assert found is not None and not found.passed and found.agreement < 0.995
    # The refusal is recorded: the next load refuses from the tag, without measuring again.
    monkeypatch.setattr(runtime_check, "measure", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-measured")))
    with pytest.raises(RuntimeRefused, match="failed its agreement check"):
        load_verified(cfg, version)
    assert runtime_check.choose(_config(champion, tiny_model, company_csv, runtime="auto"), version) != "broken"


def test_an_int8_check_held_to_a_zero_tolerance_fails(champion, tiny_model, company_csv):
    """The same real int8 runtime, held to thresholds it cannot meet (no confidence may move at all)."""
    version = registry.alias_version(champion, "champion")
    cfg = _config(champion, tiny_model, company_csv, runtime="int8", runtime_confidence_tolerance=0.0)
    with pytest.raises(RuntimeRefused, match=r"within 0\.\d+ of fp32 \(tolerance 0\)"):
        load_verified(cfg, version)
    assert not runtime_check.recorded(champion, version, "int8").passed
