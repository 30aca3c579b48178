"""score_batch: score a batch of texts with the champion and append them to the production log."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from tuneops.config import TuneopsConfig
from tuneops.serving.scoring import BatchResult, require_prediction_log
from tuneops.tasks.scoring import resolve_version, score_into_log


@flow(name="score_batch")
def score_batch(config: TuneopsConfig, input: str, output: str, version: str | None = None,
                format: Literal["jsonl", "parquet"] = "jsonl") -> BatchResult:
    """Score every text under ``input`` and append the predictions to the log under ``output``.

    1. resolve the champion alias of ``config.registry.model_name`` (or take ``version``) to one number;
    2. read the texts (a file, folder or ``s3://`` prefix) in chunks of ``serving.scoring_chunk_rows`` rows and
       check the model's input column (``data.text_column``; a causal LM's ``data.prompt_column``);
    3. load that version from the registry on ``serving.runtime`` (a runtime other than fp32 is checked against
       fp32 on the validation split first, once per version) and predict each chunk (the same code as
       `tuneops predict`): a classifier's label and confidence, a generator's response with its token counts,
       finish reason and latency; progress is logged after every chunk;
    4. stamp each row with the batch's UTC timestamp and its own request id, and write the batch as a new
       JSONL or Parquet file under ``<output>/date=YYYY-MM-DD/``: the production log monitoring reads.
    """
    require_prediction_log(config, "score_batch")
    resolved = resolve_version(config.registry.model_name, version)
    return score_into_log(config, resolved, input, output, format)
