"""The score_batch flow on a real temporary Prefect server, a real SQLite MLflow registry and a real
S3-compatible server on loopback: the champion scores a batch and appends it to the production log."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import LABELS, make_bucket, tiny_config
from tests.flows.conftest import CHAMPION_NAME
from tuneops.data.storage import Source, read_bytes, s3_client, write_bytes
from tuneops.errors import DataError, RegistryError
from tuneops.registry import versions as registry
from tuneops.serving.scoring import predict_file

LOG_COLUMNS = ["text", "label", "confidence", "model_version", "timestamp", "request_id"]  # a classifier's log row

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TEXTS = ["my card has not arrived", "change my pin", "what is the exchange rate today", "activate my new card"]


@pytest.fixture()
def batch_csv(tmp_path: Path) -> str:
    path = tmp_path / "batch.csv"
    pd.DataFrame({"text": TEXTS, "channel": ["app", "web", "app", "phone"]}).to_csv(path, index=False)
    return str(path)


@pytest.fixture()
def config(champion: str, tiny_model: str, company_csv: str):  # noqa: ANN201 - a TuneopsConfig
    return tiny_config(company_csv, tiny_model, champion)


def _check_log(frame: pd.DataFrame, uri: str, version: str) -> None:
    """One batch file: the exact log schema, one row per input text, stamped with its own request id."""
    assert list(frame.columns) == LOG_COLUMNS
    assert frame.text.tolist() == TEXTS
    assert set(frame.label) <= set(LABELS)
    assert ((frame.confidence > 0) & (frame.confidence <= 1)).all()
    assert (frame.model_version.astype(str) == version).all()
    assert frame.request_id.is_unique and frame.request_id.str.fullmatch(r"[0-9a-f-]{36}").all()
    stamped = pd.to_datetime(frame.timestamp, utc=True)
    assert stamped.nunique() == 1
    # The partition is the UTC date the batch was scored (read from the rows, so midnight cannot flake it).
    assert f"/date={stamped.iloc[0]:%Y-%m-%d}/predictions-" in uri


def test_batches_append_date_partitioned_jsonl_files(config, batch_csv, tmp_path):
    from tuneops.flows.score_batch import score_batch

    out = tmp_path / "prediction-log"
    first = score_batch(config=config, input=batch_csv, output=str(out))
    second = score_batch(config=config, input=batch_csv, output=str(out))

    champion = registry.alias_version(CHAMPION_NAME, "champion")
    assert (first.rows, first.version) == (len(TEXTS), champion) and second.version == champion
    files = sorted(out.rglob("*.jsonl"))
    assert [str(f) for f in files] == sorted([first.uri, second.uri]), "each batch is one new file"
    frames = [pd.read_json(Path(r.uri), lines=True, dtype=False, convert_dates=False) for r in (first, second)]
    for result, frame in zip((first, second), frames, strict=True):
        assert Path(result.uri).parent.parent == out and Path(result.uri).name.endswith(".jsonl")
        _check_log(frame, result.uri, champion)
    assert pd.concat(frames).request_id.is_unique, "request ids are unique across batches too"


def test_predict_and_score_batch_give_the_same_predictions(config, batch_csv, tmp_path):
    """`tuneops predict` and score_batch share one scoring path, so they agree row for row."""
    from tuneops.flows.score_batch import score_batch

    logged = score_batch(config=config, input=batch_csv, output=str(tmp_path / "log"))
    written = predict_file(config, batch_csv, str(tmp_path / "predict.jsonl"))
    predicted = pd.read_json(tmp_path / "predict.jsonl", lines=True, dtype=False)
    log = pd.read_json(Path(logged.uri), lines=True, dtype=False, convert_dates=False)
    assert written.version == logged.version
    assert predicted.label.tolist() == log.label.tolist()
    assert predicted.confidence.tolist() == pytest.approx(log.confidence.tolist())


def test_scores_an_s3_prefix_into_an_s3_parquet_log(config, s3_endpoint):
    from tuneops.flows.score_batch import score_batch

    make_bucket("scoring")
    csv = pd.DataFrame({"text": TEXTS[:2]}).to_csv(index=False).encode()
    jsonl = pd.DataFrame({"text": TEXTS[2:]}).to_json(orient="records", lines=True).encode()
    write_bytes(csv, "s3://scoring/incoming/part-1.csv")
    write_bytes(jsonl, "s3://scoring/incoming/part-2.jsonl")

    results = [score_batch(config=config, input="s3://scoring/incoming/", output="s3://scoring/log",
                           version="1", format="parquet") for _ in range(2)]

    keys = sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket="scoring", Prefix="log/")["Contents"])
    assert ["s3://scoring/" + k for k in keys] == sorted(r.uri for r in results)
    for result in results:
        assert result.uri.startswith("s3://scoring/log/date=") and result.uri.endswith(".parquet")
        assert (result.rows, result.version) == (len(TEXTS), "1")
        frame = pd.read_parquet(io.BytesIO(read_bytes(Source(result.uri))))
        _check_log(frame, result.uri, "1")

    # `tuneops predict` reads and writes S3 through the same storage code.
    written = predict_file(config, "s3://scoring/incoming/", "s3://scoring/predict/out.csv", version="1")
    predicted = pd.read_csv(io.BytesIO(read_bytes(Source("s3://scoring/predict/out.csv"))))
    assert written.rows == len(TEXTS) and predicted.label.tolist() == frame.label.tolist()


def test_user_errors_are_clear_and_write_nothing(prefect_server, config, batch_csv, tiny_model, tmp_path):
    from tuneops.flows.score_batch import score_batch

    out = tmp_path / "log"
    never = tiny_config(config.data.path, tiny_model, "never-trained-for-scoring")
    with pytest.raises(RegistryError, match="has no champion yet"):
        score_batch(config=never, input=batch_csv, output=str(out))
    with pytest.raises(DataError, match="does not exist"):
        score_batch(config=config, input=str(tmp_path / "missing.csv"), output=str(out))
    no_text = tmp_path / "no_text.csv"
    pd.DataFrame({"message": TEXTS}).to_csv(no_text, index=False)
    with pytest.raises(DataError, match="no 'text' column"):
        score_batch(config=config, input=str(no_text), output=str(out))
    with pytest.raises(DataError, match="looks like a file"):
        score_batch(config=config, input=batch_csv, output=str(tmp_path / "predictions.jsonl"))
    with pytest.raises(RegistryError, match="cannot load"):
        score_batch(config=config, input=batch_csv, output=str(out), version="99")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_streaming_in_chunks_gives_the_predictions_of_one_pass(champion, tiny_model, company_csv, tmp_path, suffix):
    """A file of more rows than a chunk, scored 7 rows at a time, gives what scoring it in one chunk gives."""
    rows = pd.read_csv(company_csv).head(40)[["text"]]
    source = tmp_path / f"many{suffix}"
    {".csv": lambda: rows.to_csv(source, index=False),
     ".jsonl": lambda: rows.to_json(source, orient="records", lines=True),
     ".parquet": lambda: rows.to_parquet(source, index=False)}[suffix]()
    seen = []
    chunked = tiny_config(company_csv, tiny_model, champion, serving={"scoring_chunk_rows": 7})
    whole = tiny_config(company_csv, tiny_model, champion, serving={"scoring_chunk_rows": 1000})
    written = predict_file(chunked, str(source), str(tmp_path / f"chunked{suffix}"),
                           progress=lambda n, seconds: seen.append(n))
    predict_file(whole, str(source), str(tmp_path / f"whole{suffix}"))
    read = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
            ".parquet": pd.read_parquet}[suffix]
    a, b = read(tmp_path / f"chunked{suffix}"), read(tmp_path / f"whole{suffix}")
    assert written.rows == len(rows) == len(a) and list(a.columns) == ["text", "label", "confidence", "model_version"]
    assert a.text.tolist() == rows.text.tolist() and a.label.tolist() == b.label.tolist()
    assert a.confidence.tolist() == pytest.approx(b.confidence.tolist(), abs=1e-6)
    assert seen == [7, 14, 21, 28, 35, 40], "progress after every chunk"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, f"chunked{suffix}", f"whole{suffix}"])
