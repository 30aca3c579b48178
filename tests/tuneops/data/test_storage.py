"""Reading datasets from local folders and from a real S3-compatible server on loopback."""

import pandas as pd
import pytest

from tests.conftest import ROOT, make_bucket
from tuneops.config import DataConfig, SplitConfig
from tuneops.data.rows import fingerprint
from tuneops.data.splits import assign_splits
from tuneops.data.storage import read_dataset, s3_client
from tuneops.errors import DataError

COLUMNS = ["text", "category"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """BANKING77 cut into three files of different formats, as company exports arrive over time."""
    df = pd.read_csv(ROOT / "data/banking77/train.csv").head(900)
    folder = tmp_path_factory.mktemp("exports")
    df.iloc[:300].to_csv(folder / "2026-01.csv", index=False)
    df.iloc[300:600].to_json(folder / "2026-02.jsonl", orient="records", lines=True)
    df.iloc[600:].to_parquet(folder / "2026-03.parquet", index=False)
    return df, folder


def test_folder_of_mixed_formats_reads_all_rows(parts):
    df, folder = parts
    read = read_dataset(str(folder))
    assert len(read) == 900 and fingerprint(read, COLUMNS) == fingerprint(df, COLUMNS)


def test_s3_prefix_gives_same_fingerprint_and_splits_as_local(parts, s3_endpoint):
    df, folder = parts
    make_bucket("company-data")
    client = s3_client()
    for path in folder.iterdir():
        client.upload_file(str(path), "company-data", f"banking/{path.name}")
    from_s3 = read_dataset("s3://company-data/banking/")
    local = read_dataset(str(folder))
    assert fingerprint(from_s3, COLUMNS) == fingerprint(local, COLUMNS)
    data = DataConfig(path="x", label_column="category")
    assert assign_splits(from_s3, data, SplitConfig()).equals(assign_splits(local, data, SplitConfig()))
    one = read_dataset("s3://company-data/banking/2026-02.jsonl")
    assert len(one) == 300


def test_s3_errors_name_the_location(s3_endpoint):
    make_bucket("empty-bucket")
    with pytest.raises(DataError, match="s3://empty-bucket/nothing/ matches no .*the prefix is empty"):
        read_dataset("s3://empty-bucket/nothing/")
    with pytest.raises(DataError, match="bucket of s3://no-such-bucket/x.csv does not exist"):
        read_dataset("s3://no-such-bucket/x.csv")


def test_s3_access_denied(s3_locked, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_locked)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEYFORTESTS0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    with pytest.raises(DataError, match="access denied to s3://private/data.csv .*grant s3:GetObject"):
        read_dataset("s3://private/data.csv")


def test_allowed_roots(tmp_path, monkeypatch, parts):
    _, folder = parts
    monkeypatch.setenv("TUNEOPS_DATA_ROOTS", str(tmp_path))
    with pytest.raises(DataError, match="outside the allowed data roots"):
        read_dataset(str(folder))
