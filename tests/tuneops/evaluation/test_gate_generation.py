"""The gate on generated text: floors, paired bootstrap on per-example ROUGE-L / exact match, slices."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.config import GateConfig
from tuneops.evaluation.gate import decide, paired_bootstrap
from tuneops.families.causal_lm.generation import exact_match, rouge_l


def predictions(references: list[str], generated: list[str], channel: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"y_true": references, "y_pred": generated,
                          "exact_match": [exact_match(g, r) for g, r in zip(generated, references, strict=True)],
                          "rouge_l": [rouge_l(g, r) for g, r in zip(generated, references, strict=True)]})
    if channel is not None:
        frame["slice:channel"] = channel
    return frame


REFS = ["card arrival", "change pin", "exchange rate", "activate my card"] * 30


def test_bootstrap_difference_is_the_mean_per_example_rouge_difference():
    rng = np.random.default_rng(1)
    champ = predictions(REFS, [r if rng.random() < 0.5 else "card" for r in REFS])
    chall = predictions(REFS, [r if rng.random() < 0.8 else "card" for r in REFS])
    delta, low, high = paired_bootstrap(chall, champ, "rouge_l", 1000, 0.95)
    assert delta == pytest_approx(chall.rouge_l.mean() - champ.rouge_l.mean())
    assert low < delta < high and low > 0  # clearly better on 120 paired prompts


def pytest_approx(x: float):
    import pytest

    return pytest.approx(x)


def test_generation_gate_passes_a_better_model_and_fails_a_worse_one():
    cfg = GateConfig(primary_metric="rouge_l", floors={"rouge_l": 0.3, "exact_match": 0.2}, max_regression=0.02)
    good = predictions(REFS, REFS[:100] + ["card"] * 20)
    bad = predictions(REFS, ["card"] * 120)
    first = decide(good, cfg)
    assert first.passed and first.reason == "passed: first model, all floors met"
    floors = {c["check"]: c["value"] for c in first.checks}
    assert floors["floor rouge_l"] == pytest_approx(good.rouge_l.mean())
    assert floors["floor exact_match"] == pytest_approx(100 / 120)

    worse = decide(bad, cfg, champion=good, champion_version="1")
    assert not worse.passed
    assert "rouge_l" in worse.reason and "below the floor" in worse.reason and "vs champion v1" in worse.reason
    better = decide(good, cfg, champion=bad, champion_version="1")
    assert better.passed and better.reason.startswith("passed: rouge_l +")
    assert not any(c["check"].startswith("slice class=") for c in better.checks)  # no per-class checks on text


def test_generation_gate_catches_a_slice_regression():
    cfg = GateConfig(primary_metric="exact_match", floors={"exact_match": 0.0}, max_regression=0.5,
                     max_slice_drop=0.2, min_slice_rows=10)
    channel = ["app"] * 60 + ["web"] * 60
    champion = predictions(REFS, REFS, channel)
    challenger = predictions(REFS, REFS[:60] + ["card"] * 60, channel)  # web answers all wrong
    decision = decide(challenger, cfg, champion=champion, champion_version="3")
    assert not decision.passed
    assert "slice channel=web exact_match drops 1.0000" in decision.reason
    assert "channel=app" not in decision.reason


def test_perplexity_ceiling_is_token_weighted_and_names_itself_when_crossed():
    import math

    frame = predictions(REFS[:4], REFS[:4])
    frame["nll"], frame["tokens"] = [2.0, 4.0, 6.0, 0.0], [2, 2, 4, 0]  # mean nll per token: 12 / 8 = 1.5
    perplexity = math.exp(1.5)  # 4.48
    passed = decide(frame, GateConfig(primary_metric="rouge_l", floors={"rouge_l": 0.5}, max_perplexity=5.0))
    ceiling = next(c for c in passed.checks if c["check"] == "ceiling perplexity")
    assert passed.passed and ceiling["value"] == pytest_approx(perplexity)

    failed = decide(frame, GateConfig(primary_metric="rouge_l", floors={"rouge_l": 0.5}, max_perplexity=4.0))
    assert not failed.passed
    assert failed.reason == "not promoted: perplexity 4.482 is above the ceiling 4.000 (gate.max_perplexity)"

    unmeasured = decide(predictions(REFS[:4], REFS[:4]),
                        GateConfig(primary_metric="rouge_l", floors={"rouge_l": 0.5}, max_perplexity=4.0))
    assert not unmeasured.passed and "perplexity was not measured" in unmeasured.reason


def test_a_model_must_beat_its_zero_shot_base_on_the_same_prompts():
    cfg = GateConfig(primary_metric="rouge_l", floors={"rouge_l": 0.0}, min_lift_over_baseline=0.0)
    base = ("zero-shot base model", predictions(REFS, ["I am a helpful assistant"] * 120))
    tuned = predictions(REFS, REFS[:100] + ["card"] * 20)
    first = decide(tuned, cfg, baseline=base)
    assert first.passed and first.reason.startswith("passed: first model, all floors met; rouge_l +")
    assert "over the baseline (zero-shot base model, CI [" in first.reason
    lift = next(c for c in first.checks if c["check"].startswith("lift over baseline"))
    assert lift["baseline"] == pytest_approx(base[1].rouge_l.mean()) and lift["ci_low"] > 0.5

    same = decide(base[1], cfg, baseline=base)  # a "fine-tune" that answers exactly as its base did
    assert same.passed  # CI [0, 0]: not below the base; a positive min_lift_over_baseline demands a real lift
    demanding = cfg.model_copy(update={"min_lift_over_baseline": 0.05})
    refused = decide(base[1], demanding, baseline=base)
    assert not refused.passed and "does not beat what it started from" in refused.reason
    assert "gate.min_lift_over_baseline" in refused.reason

    reported = decide(base[1], cfg.model_copy(update={"min_lift_over_baseline": None}), baseline=base)
    assert reported.passed and any(c["check"].startswith("lift over baseline") and not c["gated"]
                                   for c in reported.checks)
