"""Decide whether the challenger may replace the champion, with statistics, and say why.

Rules, in order (every one is recorded with its numbers, the first failures give the reason):
1. floors: absolute minimums per metric (and, for a causal LM, the ceiling gate.max_perplexity);
2. champion comparison on the same test split: a paired bootstrap confidence interval of
   (challenger - champion) on the primary metric, or McNemar's exact test for accuracy;
   non-inferiority needs lower bound >= -max_regression, superiority needs lower bound > 0;
3. per-slice non-regression: no class, and no value of a configured slice column, may lose more
   than max_slice_drop accuracy (slices under min_slice_rows are reported, not gated);
4. forgetting: on the champion's own (previous) test split the challenger may lose at most
   max_regression on the primary metric.
A first model (no champion) is gated on floors alone.

Generated text (model.task: causal_lm) is gated the same way on per-example scores (columns
``rouge_l``, ``exact_match`` in the predictions): the bootstrap resamples the per-example score
differences, and slices compare the mean primary score; per-class checks do not apply. So is a
language model adapted on unlabelled text (model.task: language_modeling) on ``log_likelihood``, the
mean token log-likelihood of each held-out text (its ``nll`` and ``tokens`` also give the perplexity
that gate.max_perplexity caps).

A per-example score may be defined on only some rows (a preference pair's correctness is not defined on
a supervised task prompt scored beside it): each metric is averaged, and its paired differences are
resampled, over the rows where both models have it. ``gate.also_compare`` names further metrics that
are compared with the champion like the primary one and may not be worse by more than max_regression.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from tuneops.config import SCORED_METRICS, GateConfig
from tuneops.evaluation.metrics import classification_metrics, perplexity


@dataclass
class GateDecision:
    """The verdict, a one-line reason, and every number behind it."""

    passed: bool
    reason: str
    champion_version: str | None = None
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"## Gate: {'PASSED' if self.passed else 'FAILED'}", "", self.reason, "",
                 "| check | result | numbers |", "|---|---|---|"]
        for c in self.checks:
            numbers = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in c.items()
                                if k not in ("check", "passed", "gated"))
            result = "ok" if c["passed"] else ("FAIL" if c.get("gated", True) else "not gated")
            lines.append(f"| {c['check']} | {result} | {numbers} |")
        return "\n".join(lines)


def _metric(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    return classification_metrics(list(y_true), list(y_pred))[metric]


"""Metrics that are means of per-example scores (columns of the predictions), not functions of labels."""


def metrics_of(predictions: pd.DataFrame) -> dict[str, float]:
    """Classification metrics from labels, or the mean of per-example scores over the rows that have them."""
    scores = [m for m in SCORED_METRICS if m in predictions.columns and predictions[m].notna().any()]
    if scores:
        return {m: float(predictions[m].mean()) for m in scores}
    return classification_metrics(predictions.y_true.tolist(), predictions.y_pred.tolist())


def per_example(predictions: pd.DataFrame, metric: str) -> pd.Series:
    """The per-example score a slice is judged by: the generation score, else correctness (accuracy)."""
    return predictions[metric] if metric in SCORED_METRICS else predictions.y_pred == predictions.y_true


def paired_bootstrap(challenger: pd.DataFrame, champion: pd.DataFrame, metric: str, samples: int,
                     confidence: float, seed: int = 0) -> tuple[float, float, float]:
    """Observed difference (challenger - champion) and its percentile confidence interval."""
    y = challenger.y_true.to_numpy()
    a, b = challenger.y_pred.to_numpy(), champion.y_pred.to_numpy()
    rng = np.random.default_rng(seed)
    if metric in SCORED_METRICS:  # a mean of per-example scores: resample their paired differences
        diff = challenger[metric].to_numpy(float) - champion[metric].to_numpy(float)
        diff = diff[~np.isnan(diff)]  # the rows where both models have the score
        idx = rng.integers(0, len(diff), size=(samples, len(diff)))
        observed, deltas = float(diff.mean()), diff[idx].mean(axis=1)
        tail = (1 - confidence) / 2
        low, high = np.quantile(deltas, [tail, 1 - tail])
        return float(observed), float(low), float(high)
    idx = rng.integers(0, len(y), size=(samples, len(y)))
    if metric == "accuracy":
        observed = _metric(y, a, metric) - _metric(y, b, metric)
        diff = (a == y).astype(float) - (b == y).astype(float)
        deltas = diff[idx].mean(axis=1)
    else:
        observed = _metric(y, a, metric) - _metric(y, b, metric)
        deltas = np.array([_metric(y[i], a[i], metric) - _metric(y[i], b[i], metric) for i in idx])
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return float(observed), float(low), float(high)


def mcnemar(challenger: pd.DataFrame, champion: pd.DataFrame) -> tuple[int, int, float]:
    """Discordant pairs (only challenger right, only champion right) and the exact two-sided p-value."""
    from scipy.stats import binomtest

    y = challenger.y_true.to_numpy()
    a, b = challenger.y_pred.to_numpy() == y, champion.y_pred.to_numpy() == y
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return only_a, only_b, float(p)


def _compare(challenger: pd.DataFrame, champion: pd.DataFrame, cfg: GateConfig, version: str,
             metric: str | None = None) -> dict:
    """The primary metric under the configured policy, or (``metric``) an also_compare metric, non-inferior."""
    m = metric or cfg.primary_metric
    policy = cfg.policy if metric is None else "non_inferiority"
    if cfg.test == "mcnemar":
        only_a, only_b, p = mcnemar(challenger, champion)
        delta = (only_a - only_b) / len(challenger)
        alpha = 1 - cfg.confidence
        if cfg.policy == "superiority":
            ok = p < alpha and only_a > only_b
        else:
            ok = not (p < alpha and only_b > only_a) and delta >= -cfg.max_regression
        return {"check": f"vs champion v{version} ({m}, McNemar, {cfg.policy})", "delta": delta,
                "only_challenger_right": only_a, "only_champion_right": only_b, "p_value": p, "passed": bool(ok)}
    delta, low, high = paired_bootstrap(challenger, champion, m, cfg.bootstrap_samples, cfg.confidence)
    bound = 0.0 if policy == "superiority" else -cfg.max_regression
    ok = low > bound if policy == "superiority" else low >= bound
    return {"check": f"vs champion v{version} ({m}, paired bootstrap, {policy})", "delta": delta,
            "ci_low": low, "ci_high": high, "bound": bound, "confidence": cfg.confidence, "passed": bool(ok)}


def slice_checks(challenger: pd.DataFrame, champion: pd.DataFrame, cfg: GateConfig) -> list[dict]:
    """Accuracy (generation: the primary score) per class and per slice value, on the same rows."""
    generation = cfg.primary_metric in SCORED_METRICS
    groups = {} if generation else {"class": challenger.y_true}
    groups.update({c.removeprefix("slice:"): challenger[c] for c in challenger.columns if c.startswith("slice:")})
    measure = cfg.primary_metric if generation else "accuracy"
    right_a, right_b = per_example(challenger, measure), per_example(champion, measure)
    checks = []
    for kind, values in groups.items():
        table = pd.DataFrame({"key": values.to_numpy(), "a": right_a.to_numpy(), "b": right_b.to_numpy()})
        for key, part in table.groupby("key"):
            drop = float(part.b.mean() - part.a.mean())
            gated = len(part) >= cfg.min_slice_rows
            if drop > 0:
                checks.append({"check": f"slice {kind}={key}", "metric": measure, "challenger": float(part.a.mean()),
                               "champion": float(part.b.mean()), "drop": drop, "rows": len(part),
                               "bound": cfg.max_slice_drop, "gated": gated,
                               "passed": bool(drop <= cfg.max_slice_drop or not gated)})
    return checks


def lift_over_baseline(challenger: pd.DataFrame, baseline: pd.DataFrame, cfg: GateConfig, name: str) -> dict:
    """The primary metric's paired difference (challenger - baseline) on the same rows, with its bootstrap CI."""
    m = cfg.primary_metric
    delta, low, high = paired_bootstrap(challenger, baseline, m, cfg.bootstrap_samples, cfg.confidence)
    bound = cfg.min_lift_over_baseline
    return {"check": f"lift over baseline ({name}, {m})", "against": name, "baseline": metrics_of(baseline)[m],
            "delta": delta,
            "ci_low": low, "ci_high": high, "confidence": cfg.confidence, "bound": bound if bound is not None else 0.0,
            "gated": bound is not None, "passed": bound is None or low >= bound}


def decide(challenger: pd.DataFrame, cfg: GateConfig, champion: pd.DataFrame | None = None,
           champion_version: str | None = None,
           previous: tuple[pd.DataFrame, pd.DataFrame] | None = None,
           baseline: tuple[str, pd.DataFrame] | None = None) -> GateDecision:
    """Apply the rules to per-example predictions (columns y_true, y_pred, optional slice:<col>).

    ``baseline`` is (what it is, its per-example predictions on the same rows), when the family scored one.
    """
    metrics = metrics_of(challenger)
    checks: list[dict] = []
    for metric, floor in sorted(cfg.floors.items()):
        checks.append({"check": f"floor {metric}", "value": metrics[metric], "bound": floor,
                       "passed": metrics[metric] >= floor})
    if cfg.max_perplexity is not None:
        checks.append(perplexity_ceiling(challenger, cfg.max_perplexity))
    if baseline is not None:
        checks.append(lift_over_baseline(challenger, baseline[1], cfg, baseline[0]))
    if champion is not None:
        checks.append(_compare(challenger, champion, cfg, champion_version or "?"))
        checks += [_compare(challenger, champion, cfg, champion_version or "?", m) for m in cfg.also_compare]
        checks += slice_checks(challenger, champion, cfg)
    if previous is not None:
        chall_prev, champ_prev = previous
        measured_a, measured_b = metrics_of(chall_prev), metrics_of(champ_prev)
        for m in [cfg.primary_metric, *cfg.also_compare]:
            if m not in measured_a or m not in measured_b:
                continue  # the previous split does not measure it (e.g. a supervised split has no preference pairs)
            a, b = measured_a[m], measured_b[m]
            checks.append({"check": f"forgetting ({m} on the previous test split)", "challenger": a, "champion": b,
                           "delta": a - b, "bound": -cfg.max_regression, "rows": len(chall_prev),
                           "passed": a - b >= -cfg.max_regression})

    failures = [_explain(c) for c in checks if not c["passed"]]
    if failures:
        return GateDecision(False, "not promoted: " + "; ".join(failures), champion_version, checks)
    lift = next((c for c in checks if c["check"].startswith("lift over baseline")), None)
    lifted = (f"; {cfg.primary_metric} {lift['delta']:+.4f} over the baseline ({lift['against']}, "
              f"CI [{lift['ci_low']:+.4f}, {lift['ci_high']:+.4f}]{'' if lift['gated'] else ', not gated'})"
              ) if lift else ""
    if champion is None:
        return GateDecision(True, "passed: first model, all floors met" + lifted, champion_version, checks)
    compare = next(c for c in checks if c["check"].startswith("vs champion"))
    detail = (f"CI [{compare['ci_low']:+.4f}, {compare['ci_high']:+.4f}]" if "ci_low" in compare
              else f"McNemar p={compare['p_value']:.3g}")
    also = "".join(f"; {m} {c['delta']:+.4f} (CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], within "
                   f"-{cfg.max_regression:g})" for m, c in zip(
                       cfg.also_compare, [c for c in checks if c["check"].startswith("vs champion")][1:], strict=True))
    return GateDecision(True, f"passed: {cfg.primary_metric} {compare['delta']:+.4f} vs champion "
                              f"v{champion_version} on the same test split ({detail}, {cfg.policy}){also}; floors, "
                              f"slices{' and previous split' if previous else ''} hold{lifted}", champion_version,
                        checks)


def perplexity_ceiling(challenger: pd.DataFrame, ceiling: float) -> dict:
    """Perplexity of the test references against the ceiling; failed when it was not measured."""
    value = perplexity(challenger)
    return {"check": "ceiling perplexity", "value": value, "bound": ceiling,
            "passed": value is not None and value <= ceiling}


def _explain(check: dict) -> str:
    name = check["check"]
    if name.startswith("lift over baseline"):
        return (f"{name}: difference {check['delta']:+.4f} (baseline {check['baseline']:.4f}), "
                f"{check['confidence']:.0%} CI lower bound {check['ci_low']:+.4f} < {check['bound']:+.4f} "
                "(gate.min_lift_over_baseline): it does not beat what it started from")
    if name.startswith("ceiling"):
        if check["value"] is None:
            return "perplexity was not measured (no per-example nll in the evaluation); unset gate.max_perplexity"
        return f"perplexity {check['value']:.3f} is above the ceiling {check['bound']:.3f} (gate.max_perplexity)"
    if name.startswith("floor"):
        return f"{name.removeprefix('floor ')} {check['value']:.4f} is below the floor {check['bound']:.4f}"
    if name.startswith("vs champion"):
        if "ci_low" in check:
            return (f"{name}: difference {check['delta']:+.4f}, {check['confidence']:.0%} CI lower bound "
                    f"{check['ci_low']:+.4f} {'<=' if check['bound'] == 0 else '<'} {check['bound']:+.4f}")
        return (f"{name}: difference {check['delta']:+.4f} (challenger alone right {check['only_challenger_right']}, "
                f"champion alone right {check['only_champion_right']}, p={check['p_value']:.3g})")
    if name.startswith("slice"):
        return (f"{name} {check.get('metric', 'accuracy')} drops "
                f"{check['drop']:.4f} ({check['champion']:.3f} -> {check['challenger']:.3f}, "
                f"{check['rows']} rows) > {check['bound']:.4f}")
    return (f"{name}: {check['challenger']:.4f} vs champion {check['champion']:.4f}, "
            f"more than {-check['bound']:.4f} lower")


