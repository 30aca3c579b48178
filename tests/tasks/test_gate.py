from tasks.gate import decide
from tuneops.config import GateConfig

CFG = GateConfig(primary_metric="accuracy", floors={"accuracy": 0.8, "macro_f1": 0.7}, max_regression=0.01)


def test_first_model_gated_on_floors_only():
    d = decide({"accuracy": 0.85, "macro_f1": 0.8}, None, CFG)
    assert d.passed and d.reason == "passed: first model, all floors met"
    assert [c["check"] for c in d.checks] == ["floor accuracy", "floor macro_f1"]


def test_floor_failure_names_metric_and_values():
    d = decide({"accuracy": 0.75, "macro_f1": 0.8}, None, CFG)
    assert not d.passed
    assert "accuracy 0.7500 is below the floor 0.8000" in d.reason


def test_within_margin_of_champion_passes():
    d = decide({"accuracy": 0.855, "macro_f1": 0.8}, {"accuracy": 0.86, "macro_f1": 0.8}, CFG, "3")
    assert d.passed and "champion v3" in d.reason


def test_regression_beyond_margin_fails():
    d = decide({"accuracy": 0.84, "macro_f1": 0.8}, {"accuracy": 0.86, "macro_f1": 0.8}, CFG, "3")
    assert not d.passed
    assert "0.0200 below champion v3" in d.reason
    check = d.checks[-1]
    assert check["delta"] < -0.01 and check["passed"] is False


def test_primary_metric_is_configurable():
    cfg = GateConfig(primary_metric="macro_f1", floors={}, max_regression=0.0)
    d = decide({"accuracy": 0.99, "macro_f1": 0.5}, {"accuracy": 0.5, "macro_f1": 0.6}, cfg, "1")
    assert not d.passed and "macro_f1" in d.reason
