"""Decide whether the challenger may replace the champion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from prefect import task

from tuneops.config import GateConfig


@dataclass
class GateDecision:
    """The verdict, a one-line reason, and every number behind it."""

    passed: bool
    reason: str
    champion_version: str | None = None
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(challenger: dict[str, float], champion: dict[str, float] | None, cfg: GateConfig,
           champion_version: str | None = None) -> GateDecision:
    """Apply absolute floors, then non-regression against the champion on the same test split."""
    checks, failures = [], []
    for metric, floor in sorted(cfg.floors.items()):
        ok = challenger[metric] >= floor
        checks.append({"check": f"floor {metric}", "value": challenger[metric], "bound": floor, "passed": ok})
        if not ok:
            failures.append(f"{metric} {challenger[metric]:.4f} is below the floor {floor:.4f}")
    if champion is not None:
        m = cfg.primary_metric
        delta = challenger[m] - champion[m]
        ok = delta >= -cfg.max_regression
        checks.append({"check": f"vs champion {m}", "value": challenger[m], "champion": champion[m],
                       "delta": delta, "bound": -cfg.max_regression, "passed": ok})
        if not ok:
            failures.append(f"{m} {challenger[m]:.4f} is {-delta:.4f} below champion v{champion_version} "
                            f"({champion[m]:.4f}) on the same test split; allowed regression is "
                            f"{cfg.max_regression:.4f}")
    if failures:
        return GateDecision(False, "not promoted: " + "; ".join(failures), champion_version, checks)
    if champion is None:
        reason = "passed: first model, all floors met"
    else:
        m = cfg.primary_metric
        reason = (f"passed: {m} {challenger[m]:.4f} vs champion v{champion_version} {champion[m]:.4f} "
                  f"(same test split), all floors met")
    return GateDecision(True, reason, champion_version, checks)


@task(name="gate")
def gate(challenger: dict[str, float], champion: tuple[str, dict[str, float]] | None, cfg: GateConfig,
         run_id: str) -> GateDecision:
    """Decide promotion and record the decision and its reason on the run."""
    import json

    from tuneops import tracking

    version, metrics = champion if champion else (None, None)
    decision = decide(challenger, metrics, cfg, version)
    tracking.set_tags(run_id, {"tuneops.gate.passed": decision.passed, "tuneops.gate.reason": decision.reason[:5000]})
    tracking.log_text(run_id, json.dumps(decision.to_dict(), indent=2), "gate/decision.json")
    return decision
