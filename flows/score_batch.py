"""score_batch: score a batch of texts with the champion and append them to the production log."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from tuneops.config import TuneopsConfig
from tuneops.scoring import BatchResult, input_column, require_prediction_log
from tuneops.tasks.scoring import append_prediction_log, read_texts, resolve_version, score_texts


@flow(name="score_batch")
def score_batch(config: TuneopsConfig, input: str, output: str, version: str | None = None,
                format: Literal["jsonl", "parquet"] = "jsonl") -> BatchResult:
    """Score every text under ``input`` and append the predictions to the log under ``output``.

    1. resolve the champion alias of ``config.registry.model_name`` (or take ``version``) to one number;
    2. read the texts (a file, folder or ``s3://`` prefix) and check the model's input column
       (``data.text_column``; a causal LM's ``data.prompt_column``);
    3. load that version from the registry and predict each row (the same code as `tuneops predict`): a
       classifier's label and confidence, a generator's response with its token counts, finish reason
       and latency;
    4. stamp each row with a UTC timestamp and its own request id, and write the batch as a new
       JSONL or Parquet file under ``<output>/date=YYYY-MM-DD/``: the production log monitoring reads.
    """
    require_prediction_log(config, "score_batch")
    name = config.registry.model_name
    resolved = resolve_version(name, version)
    column = input_column(config)
    texts = read_texts(input, column)
    scored = score_texts(name, resolved, texts, column)
    uri = append_prediction_log(scored, output, format)
    return BatchResult(rows=len(scored), version=resolved, uri=uri)
