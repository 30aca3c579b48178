"""The production-log helpers of tuneops.serving.scoring, without a model: names, stamps, formats, refusals."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from tuneops.errors import DataError
from tuneops.serving.scoring import append_prediction_log, log_file_uri, read_texts, stamp_predictions

LOG_COLUMNS = ["text", "label", "confidence", "model_version", "timestamp", "request_id"]  # a classifier's log row

NOW = datetime(2025, 3, 4, 23, 59, 58, 123456, tzinfo=UTC)


def scored(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"t{i}" for i in range(n)], "label": ["a"] * n, "confidence": [0.5] * n,
                         "model_version": "7"})


def test_log_file_uri_is_a_new_name_under_the_utc_date_partition():
    first, second = log_file_uri("s3://b/log/", NOW, "jsonl"), log_file_uri("s3://b/log", NOW, "jsonl")
    assert re.fullmatch(r"s3://b/log/date=2025-03-04/predictions-20250304T235958Z-[0-9a-f]{8}\.jsonl", first)
    assert first != second
    # A local time just past midnight east of UTC still belongs to the UTC day before.
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert "/date=2025-03-04/" in log_file_uri("/var/log/preds", local, "parquet")


def test_log_file_uri_refuses_a_file_or_an_unknown_format(tmp_path):
    with pytest.raises(DataError, match="looks like a file"):
        log_file_uri(str(tmp_path / "preds.parquet"), NOW, "parquet")
    (tmp_path / "existing").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        log_file_uri(str(tmp_path / "existing"), NOW, "jsonl")
    with pytest.raises(DataError, match="format 'csv' is not supported"):
        log_file_uri(str(tmp_path), NOW, "csv")


def test_stamp_adds_timestamp_and_one_request_id_per_row():
    stamped = stamp_predictions(scored(5), NOW)
    assert list(stamped.columns) == LOG_COLUMNS
    assert (stamped.timestamp == "2025-03-04T23:59:58.123+00:00").all()
    assert stamped.request_id.is_unique and (stamped.model_version == "7").all()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_append_writes_a_new_readable_file_per_batch(tmp_path, fmt):
    uris = [append_prediction_log(scored(), str(tmp_path), fmt, now=NOW) for _ in range(2)]
    assert len(set(uris)) == 2 and len(list((tmp_path / "date=2025-03-04").iterdir())) == 2
    for uri in uris:
        data = Path(uri).read_bytes()
        frame = (pd.read_parquet(io.BytesIO(data)) if fmt == "parquet"
                 else pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False))
        assert list(frame.columns) == LOG_COLUMNS and len(frame) == 3


def test_read_texts_refuses_a_missing_column_or_no_rows(tmp_path):
    (tmp_path / "other.csv").write_text("message\nhello\n")
    with pytest.raises(DataError, match="has no 'text' column"):
        read_texts(str(tmp_path / "other.csv"), "text")
    (tmp_path / "header.csv").write_text("text\n")
    with pytest.raises(DataError, match="nothing to score"):
        read_texts(str(tmp_path / "header.csv"), "text")


def test_s3_inputs_stream_in_ranged_reads_never_whole(tmp_path, s3_endpoint, monkeypatch):
    """An S3 input is read as local files are, chunk by chunk: each GET asks for at most S3_READ_BYTES, and the
    first chunk is scored before the object has been read to its end (memory bounded by the block, not the object)."""
    from tests.conftest import ROOT, make_bucket
    from tuneops.data import storage
    from tuneops.serving.scoring import iter_texts

    df = pd.read_csv(ROOT / "data/banking77/train.csv").head(12_000)  # about 1 MB as CSV: pandas reads 256 KB at a time
    make_bucket("stream-in")
    client = storage.s3_client()
    for name, write in (("a.csv", lambda p: df.to_csv(p, index=False)),
                        ("b.jsonl", lambda p: df.to_json(p, orient="records", lines=True)),
                        ("c.parquet", lambda p: df.to_parquet(p, index=False))):
        write(tmp_path / name)
        client.upload_file(str(tmp_path / name), "stream-in", f"in/{name}")
    readers: list[storage.S3Reader] = []

    class Watched(storage.S3Reader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            readers.append(self)

    monkeypatch.setattr(storage, "S3Reader", Watched)
    monkeypatch.setattr(storage, "S3_READ_BYTES", 16 << 10)
    chunks = iter_texts("s3://stream-in/in/", "text", rows=500)
    first = next(chunks)
    assert len(first) == 500 and first.text.tolist() == df.text.head(500).tolist()
    assert readers[0].position < readers[0].size / 2, "the first chunk came after most of the object was fetched"
    rest = pd.concat([first, *chunks], ignore_index=True)
    assert len(rest) == 3 * len(df) and rest.text.tolist() == df.text.tolist() * 3
    assert len(readers) == 3 and all(0 < r.largest_read <= 16 << 10 for r in readers)
    assert all(r.size > 16 << 10 for r in readers)  # every object spans several reads
