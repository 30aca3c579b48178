"""score_batch: score a batch of texts with the champion and append them to the production log."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from tuneops.config import TuneopsConfig
from tuneops.scoring import BatchResult, require_prediction_log
from tuneops.tasks.scoring import append_prediction_log, read_texts, resolve_version, score_texts


@flow(name="score_batch")
def score_batch(config: TuneopsConfig, input: str, output: str, version: str | None = None,
                format: Literal["jsonl", "parquet"] = "jsonl") -> BatchResult:
    """Score every text under ``input`` and append the predictions to the log under ``output``.

    1. resolve the champion alias of ``config.registry.model_name`` (or take ``version``) to one number;
    2. read the texts (a file, folder or ``s3://`` prefix) and check ``config.data.text_column``;
    3. load that version from the registry and predict label and confidence per text (the same code
       as `tuneops predict`);
    4. stamp each row with a UTC timestamp and its own request id, and write the batch as a new
       JSONL or Parquet file under ``<output>/date=YYYY-MM-DD/``: the production log monitoring reads.
    """
    require_prediction_log(config, "score_batch")
    name = config.registry.model_name
    resolved = resolve_version(name, version)
    texts = read_texts(input, config.data.text_column)
    scored = score_texts(name, resolved, texts, config.data.text_column)
    uri = append_prediction_log(scored, output, format)
    return BatchResult(rows=len(scored), version=resolved, uri=uri)
