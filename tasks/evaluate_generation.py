"""Score causal LMs (model.task: causal_lm) on held-out prompts: the challenger, and the champion on the same rows.

Greedy generation on every test prompt, then per example: exact match, ROUGE-L F1 and (for the
challenger, whose weights are at hand) the response's negative log-likelihood. The per-example
scores go to a Parquet file (columns y_true, y_pred, exact_match, rouge_l, optional nll/tokens and
slice:<column>) so the gate pairs the two models example by example, as it does for classifiers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.evaluate import ChampionScores, Evaluation, publish, rescore_champion
from tuneops.config import TuneopsConfig

Generate = Callable[[list], list[str]]
WORST = 10  # lowest-scoring examples shown in the report


def perplexity(predictions: pd.DataFrame) -> float | None:
    """Token-weighted perplexity of the references from per-example nll/tokens; None when not measured."""
    import math

    if "nll" not in predictions or predictions.tokens.sum() == 0:
        return None
    return math.exp(float(predictions.nll.sum() / predictions.tokens.sum()))


def generation_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Mean exact match and ROUGE-L, and perplexity when the per-example NLL is known."""
    metrics = {"exact_match": float(predictions.exact_match.mean()), "rouge_l": float(predictions.rouge_l.mean())}
    measured = perplexity(predictions)
    if measured is not None:
        metrics["perplexity"] = measured
    return metrics


def score_generations(generate: Generate, frame: pd.DataFrame, cfg: TuneopsConfig, out_path: Path,
                      nll: Callable[[list, list[str]], tuple[list[float], list[int]]] | None = None) -> Evaluation:
    """Generate a response for every prompt of a frame, keep the per-example scores, compute the metrics."""
    from tuneops import generation

    prompts, references = generation.examples(frame, cfg)
    start = time.perf_counter()
    responses = [str(r) for r in generate(prompts)]
    seconds = time.perf_counter() - start
    predictions = pd.DataFrame({
        "prompt": [p if isinstance(p, str) else generation.render_prompt(None, p, "{prompt}") for p in prompts],
        "y_true": references, "y_pred": responses,
        "exact_match": [generation.exact_match(p, r) for p, r in zip(responses, references, strict=True)],
        "rouge_l": [generation.rouge_l(p, r) for p, r in zip(responses, references, strict=True)],
    })
    if nll is not None:
        predictions["nll"], predictions["tokens"] = nll(prompts, references)
    for column in cfg.gate.slice_columns:
        predictions[f"slice:{column}"] = frame[column].astype(str).to_numpy()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_path, index=False)
    metrics = generation_metrics(predictions)
    metrics["seconds"] = seconds
    metrics["seconds_per_1000"] = seconds / max(len(prompts), 1) * 1000
    return Evaluation(metrics, str(out_path))


def generator_functions(model_dir: str, cfg: TuneopsConfig) -> tuple[Generate, Callable]:
    from tuneops.generation import Generator

    generator = Generator(model_dir, batch_size=cfg.training.eval_batch_size)
    return generator.generate, generator.response_nll


def registered_generate(name: str, version: str) -> Generate:
    from tuneops.scoring import load_model

    model = load_model(name, version)

    def generate(prompts: list) -> list[str]:
        texts = [p if isinstance(p, str) else json.dumps(p) for p in prompts]  # the signature takes text
        return model.predict(pd.DataFrame({"prompt": texts}))["response"].astype(str).tolist()

    return generate


@task(name="evaluate-generation", cache_policy=NO_CACHE)
def evaluate_generator(model_dir: str, test_path: str, cfg: TuneopsConfig, out_dir: Path, run_id: str) -> Evaluation:
    """Exact match, ROUGE-L and perplexity of the challenger on the test split (greedy generation)."""
    from tuneops import tracking

    generate, nll = generator_functions(model_dir, cfg)
    evaluation = score_generations(generate, pd.read_parquet(test_path), cfg, out_dir / "challenger_test.parquet",
                                   nll)
    tracking.log_metrics(run_id, {f"test_{k}": v for k, v in evaluation.metrics.items()})
    return evaluation


@task(name="score-champion-generation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def score_champion_generation(model_dir: str, test_path: str, test_fingerprint: str, cfg: TuneopsConfig,
                              out_dir: Path, run_id: str) -> ChampionScores | None:
    """Re-score the registered champion on *this* run's test split (and both models on its previous one)."""
    return rescore_champion(cfg, test_path, test_fingerprint, out_dir, run_id, registered_generate,
                            lambda: generator_functions(model_dir, cfg)[0], score_generations)


def report_markdown(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str) -> str:
    """The report a reviewer reads: headline metrics, the gate's reasoning, the worst examples."""
    m = challenger.metrics
    predictions = pd.read_parquet(challenger.predictions_path)
    ppl = f", perplexity {m['perplexity']:.3f}" if "perplexity" in m else ""
    lines = [f"# Evaluation of {cfg.registry.model_name} (causal LM)", "",
             f"Test split ({len(predictions)} prompts, greedy, at most {cfg.model.max_new_tokens} new tokens): "
             f"ROUGE-L **{m['rouge_l']:.4f}**, exact match **{m['exact_match']:.4f}**{ppl}, "
             f"{m['seconds_per_1000']:.2f} s per 1,000 generations.", "", decision_md, "",
             f"## Lowest ROUGE-L ({min(WORST, len(predictions))} of {len(predictions)})", "",
             "| prompt | reference | generated | ROUGE-L |", "|---|---|---|---|"]

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")[:120]

    lines += [f"| {cell(r.prompt)} | {cell(r.y_true)} | {cell(r.y_pred)} | {r.rouge_l:.3f} |"
              for r in predictions.sort_values("rouge_l", kind="stable").head(WORST).itertuples()]
    lines += ["", "Per-example scores: `evaluation/challenger_test.parquet` on the MLflow run."]
    return "\n".join(lines)


@task(name="publish-generation-report")
def publish_generation_report(cfg: TuneopsConfig, challenger: Evaluation, decision_md: str, run_id: str) -> str:
    """Publish the generator's evaluation report, with the per-example scores beside it in MLflow."""
    return publish(report_markdown(cfg, challenger, decision_md), run_id, "Generation metrics and gate reasoning",
                   (challenger.predictions_path,))
