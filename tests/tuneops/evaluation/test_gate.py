"""Every gate outcome, on per-example predictions built so the right answer is known."""

import numpy as np
import pandas as pd
import pytest

from tuneops.config import GateConfig
from tuneops.evaluation.gate import decide, mcnemar, paired_bootstrap

LABELS = ["a", "b", "c", "d"]


def predictions(n: int, accuracy: float, seed: int, channel: list[str] | None = None) -> pd.DataFrame:
    """n rows over four labels; the first accuracy*n rows predicted right, the rest wrong."""
    rng = np.random.default_rng(seed)
    y = np.array(LABELS * (n // 4))
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[: int(round(accuracy * n))]] = True
    wrong = np.array([LABELS[(LABELS.index(v) + 1) % 4] for v in y])
    frame = pd.DataFrame({"y_true": y, "y_pred": np.where(right, y, wrong)})
    if channel is not None:
        frame["slice:channel"] = channel
    return frame


CFG = GateConfig(floors={"accuracy": 0.8, "macro_f1": 0.7}, max_regression=0.02, max_slice_drop=0.10)


def test_first_model_gated_on_floors_only():
    d = decide(predictions(400, 0.9, 0), CFG)
    assert d.passed and d.reason == "passed: first model, all floors met"
    assert [c["check"] for c in d.checks] == ["floor accuracy", "floor macro_f1"]


def test_floor_failure_names_metric_and_values():
    d = decide(predictions(400, 0.75, 0), CFG)
    assert not d.passed and "accuracy 0.7500 is below the floor 0.8000" in d.reason


def test_non_inferiority_passes_for_equal_models():
    champion = predictions(800, 0.9, 1)
    d = decide(champion.copy(), CFG, champion, "3")
    assert d.passed and "vs champion v3" in d.reason and "CI [+0.0000, +0.0000]" in d.reason


def test_non_inferiority_fails_when_clearly_worse():
    champion = predictions(800, 0.92, 1)
    challenger = champion.copy()
    flip = champion.index[champion.y_true == champion.y_pred][:64]  # 8 points worse, same rows otherwise
    challenger.loc[flip, "y_pred"] = "z"
    d = decide(challenger, GateConfig(floors={}, max_regression=0.02, max_slice_drop=1.0), champion, "3")
    assert not d.passed
    check = next(c for c in d.checks if c["check"].startswith("vs champion"))
    assert check["delta"] == pytest.approx(-0.08) and check["ci_low"] < -0.02 and not check["passed"]
    assert "CI lower bound" in d.reason


def test_superiority_needs_lower_bound_above_zero():
    champion = predictions(800, 0.85, 1)
    cfg = GateConfig(floors={}, policy="superiority", max_slice_drop=1.0)
    assert not decide(champion.copy(), cfg, champion, "1").passed  # equal is not better
    better = champion.copy()
    fix = champion.index[champion.y_true != champion.y_pred][:60]
    better.loc[fix, "y_pred"] = better.loc[fix, "y_true"]
    d = decide(better, cfg, champion, "1")
    assert d.passed, d.reason
    check = next(c for c in d.checks if c["check"].startswith("vs champion"))
    assert check["ci_low"] > 0


def test_mcnemar_counts_discordant_pairs():
    champion = predictions(400, 0.8, 2)
    challenger = champion.copy()
    fix = champion.index[champion.y_true != champion.y_pred][:30]
    challenger.loc[fix, "y_pred"] = challenger.loc[fix, "y_true"]
    only_a, only_b, p = mcnemar(challenger, champion)
    assert (only_a, only_b) == (30, 0) and p < 1e-6
    d = decide(challenger, GateConfig(floors={}, test="mcnemar", policy="superiority", max_slice_drop=1.0),
               champion, "2")
    assert d.passed and "McNemar p=" in d.reason


def test_slice_regression_fails_even_when_overall_is_fine():
    channel = ["app"] * 700 + ["phone"] * 100
    champion = predictions(800, 0.9, 3, channel)
    challenger = champion.copy()
    phone_right = champion.index[(champion["slice:channel"] == "phone") & (champion.y_true == champion.y_pred)]
    app_wrong = champion.index[(champion["slice:channel"] == "app") & (champion.y_true != champion.y_pred)]
    challenger.loc[phone_right[:20], "y_pred"] = "z"  # phone drops 20 points
    challenger.loc[app_wrong[:20], "y_pred"] = challenger.loc[app_wrong[:20], "y_true"]  # overall unchanged
    d = decide(challenger, GateConfig(floors={}, max_regression=0.02, max_slice_drop=0.10), champion, "4")
    assert not d.passed
    assert "slice channel=phone accuracy drops 0.2000" in d.reason


def test_small_slices_are_reported_not_gated():
    channel = ["app"] * 790 + ["fax"] * 10
    champion = predictions(800, 0.9, 4, channel)
    challenger = champion.copy()
    fax_right = champion.index[(champion["slice:channel"] == "fax") & (champion.y_true == champion.y_pred)]
    challenger.loc[fax_right[:5], "y_pred"] = "z"
    d = decide(challenger, GateConfig(floors={}, max_regression=0.02, min_slice_rows=20), champion, "4")
    fax = next(c for c in d.checks if c["check"] == "slice channel=fax")
    assert fax["gated"] is False and fax["passed"] and d.passed


def test_forgetting_check_on_previous_split():
    current = predictions(400, 0.9, 5)
    old_champion = predictions(400, 0.9, 6)
    old_challenger = old_champion.copy()
    right = old_champion.index[old_champion.y_true == old_champion.y_pred][:40]
    old_challenger.loc[right, "y_pred"] = "z"  # forgets 10 points of the old data
    d = decide(current.copy(), GateConfig(floors={}), current, "5", previous=(old_challenger, old_champion))
    assert not d.passed and "forgetting (accuracy on the previous test split)" in d.reason


def test_bootstrap_interval_contains_observed_difference():
    a, b = predictions(1000, 0.85, 7), predictions(1000, 0.85, 8)
    b["y_true"] = a["y_true"]
    observed, low, high = paired_bootstrap(a, b, "macro_f1", 300, 0.9)
    assert low <= observed <= high


def mixed(pair_right: np.ndarray, task_right: np.ndarray) -> pd.DataFrame:
    """A preference model's predictions: pair rows (preference_accuracy) and task rows (set_match) in one frame."""
    pairs = pd.DataFrame({"kind": "pair", "y_true": "c", "y_pred": np.where(pair_right, "chosen", "rejected"),
                          "preference_accuracy": pair_right.astype(float), "set_match": np.nan})
    task = pd.DataFrame({"kind": "task", "y_true": "t", "y_pred": "t", "preference_accuracy": np.nan,
                         "set_match": task_right.astype(float)})
    return pd.concat([pairs, task], ignore_index=True)


PREF = GateConfig(primary_metric="preference_accuracy", floors={}, also_compare=["set_match"], max_regression=0.02)


def test_each_metric_is_compared_on_the_rows_that_define_it():
    rng = np.random.default_rng(0)
    champ_pairs, task = rng.random(300) < 0.6, rng.random(400) < 0.5
    better = champ_pairs | (rng.random(300) < 0.5)  # wins every pair the champion won, and more
    d = decide(mixed(better, task), PREF, mixed(champ_pairs, task), "1")
    checks = {c["check"]: c for c in d.checks}
    pref = checks["vs champion v1 (preference_accuracy, paired bootstrap, non_inferiority)"]
    assert pref["delta"] == pytest.approx(better.mean() - champ_pairs.mean())  # means over the 300 pairs only
    task_check = checks["vs champion v1 (set_match, paired bootstrap, non_inferiority)"]
    assert task_check["delta"] == 0 and task_check["ci_low"] == 0 and task_check["passed"]
    assert d.passed and "; set_match +0.0000 (CI [+0.0000, +0.0000], within -0.02)" in d.reason


def test_a_preference_gain_cannot_buy_forgetting_the_task():
    rng = np.random.default_rng(1)
    pairs, task = rng.random(300) < 0.5, rng.random(400) < 0.6
    forgot = task & (rng.random(400) < 0.7)  # loses about a third of the prompts it got right
    d = decide(mixed(np.ones(300, bool), forgot), PREF.model_copy(update={"policy": "superiority"}),
               mixed(pairs, task), "1")
    assert not d.passed
    assert "vs champion v1 (set_match, paired bootstrap, non_inferiority): difference -0.2" in d.reason
    assert "preference_accuracy" not in d.reason  # that comparison passed (superiority)


def test_forgetting_check_skips_a_metric_the_previous_split_does_not_measure():
    task = np.random.default_rng(2).random(200) < 0.5
    previous = (mixed(np.zeros(0, bool), task), mixed(np.zeros(0, bool), task))
    d = decide(mixed(np.ones(50, bool), task), PREF, mixed(np.ones(50, bool), task), "1", previous)
    assert [c["check"] for c in d.checks if c["check"].startswith("forgetting")] == [
        "forgetting (set_match on the previous test split)"]


def test_also_compare_names_known_metrics_and_needs_the_bootstrap():
    with pytest.raises(ValueError, match="also_compare: unknown metric 'bleu'"):
        GateConfig(also_compare=["bleu"])
    with pytest.raises(ValueError, match="also_compare needs the paired bootstrap"):
        GateConfig(test="mcnemar", also_compare=["macro_f1"])
