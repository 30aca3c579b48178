"""Score models on the held-out test split: the challenger just trained, and the champion."""

from __future__ import annotations

import time

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.finetune import classification_metrics
from tuneops.config import TuneopsConfig


def score_texts(predict, frame: pd.DataFrame, cfg: TuneopsConfig) -> dict[str, float]:  # noqa: ANN001
    """Metrics of ``predict`` (texts -> labels) on a labelled frame, plus latency per 1,000 texts."""
    texts = frame[cfg.data.text_column].astype(str).tolist()
    start = time.perf_counter()
    predicted = predict(texts)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(frame[cfg.data.label_column].astype(str).tolist(), list(predicted))
    metrics["seconds"] = seconds
    metrics["seconds_per_1000"] = seconds / max(len(texts), 1) * 1000
    return metrics


@task(name="evaluate-challenger", cache_policy=NO_CACHE)
def evaluate_challenger(model_dir: str, test_path: str, cfg: TuneopsConfig, run_id: str) -> dict[str, float]:
    """Accuracy and macro-F1 of the freshly trained model on the test split."""
    from tuneops import tracking
    from tuneops.models import Classifier

    classifier = Classifier(model_dir, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)
    metrics = score_texts(lambda texts: classifier.predict(texts).labels, pd.read_parquet(test_path), cfg)
    tracking.log_metrics(run_id, {f"test_{k}": v for k, v in metrics.items()})
    return metrics


@task(name="score-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def score_champion(test_path: str, cfg: TuneopsConfig, run_id: str) -> tuple[str, dict[str, float]] | None:
    """Re-score the current champion on *this* run's test split; None when there is no champion.

    Comparing with the champion's own recorded metrics would compare different test sets.
    """
    import mlflow

    from tuneops import registry, tracking

    version = registry.alias_version(cfg.registry.model_name, "champion")
    if version is None:
        return None
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/{version}")
    metrics = score_texts(lambda texts: model.predict(pd.DataFrame({"text": texts}))["label"].tolist(),
                          pd.read_parquet(test_path), cfg)
    tracking.log_metrics(run_id, {f"champion_test_{k}": v for k, v in metrics.items()})
    tracking.set_tags(run_id, {"tuneops.champion_version": version})
    return version, metrics
