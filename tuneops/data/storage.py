"""Datasets as local paths or ``s3://bucket/prefix`` URIs: one file, or a folder/prefix of many.

S3 goes through boto3 with its standard configuration (``AWS_ENDPOINT_URL``, the usual AWS
variables or profiles) and retries on transient errors. Every failure a user can cause (a
missing object, an empty prefix, access denied, a path outside the allowed roots) becomes a
:class:`DataError` that names the location and the fix.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.errors import DataError

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
ALLOWED_ROOTS_ENV = "TUNEOPS_DATA_ROOTS"


@dataclass(frozen=True)
class Source:
    """One data file: where it is and how to read its bytes."""

    uri: str

    @property
    def suffix(self) -> str:
        return Path(self.uri.split("?")[0]).suffix.lower()


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise DataError(f"{uri} names no bucket; write s3://bucket/prefix")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment, with adaptive retries."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "adaptive"},
                                            connect_timeout=5, read_timeout=60))


RETRY_ENV = "TUNEOPS_S3_RETRY_SECONDS"


def _retrying(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, retried while the S3 endpoint refuses or drops connections.

    botocore's own retries (5 attempts, adaptive) span a few seconds; an endpoint that restarts, fails over or is
    briefly unreachable takes longer. Connection-level errors only (never an answer such as AccessDenied) are
    retried with doubling waits (0.5 s up to 8 s) for at most TUNEOPS_S3_RETRY_SECONDS (default 120 s) in all.
    """
    import time

    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    deadline = time.monotonic() + float(os.environ.get(RETRY_ENV, "120"))
    wait = 0.5
    while True:
        try:
            return call(*args, **kwargs)
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError):
            if time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


def _s3_error(exc: Exception, uri: str) -> DataError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return DataError(f"no AWS credentials to read {uri}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                         "AWS_PROFILE")
    if isinstance(exc, EndpointConnectionError):
        return DataError(f"cannot reach the S3 endpoint for {uri} ({exc}); check AWS_ENDPOINT_URL and the network")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return DataError(f"access denied to {uri} ({code}); grant s3:GetObject and s3:ListBucket to these "
                             "credentials")
        if code in ("NoSuchBucket",):
            return DataError(f"bucket of {uri} does not exist; check the bucket name in data.path")
        if code in ("NoSuchKey", "404"):
            return DataError(f"{uri} does not exist; check data.path")
        return DataError(f"S3 error reading {uri}: {code} {exc}")
    return DataError(f"S3 error reading {uri}: {exc}")


def check_allowed(path: Path) -> None:
    """Refuse local paths outside ``TUNEOPS_DATA_ROOTS`` (colon-separated) when it is set."""
    roots = [Path(r).resolve() for r in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if r]
    if roots and not any(path.resolve().is_relative_to(root) for root in roots):
        raise DataError(f"{path} is outside the allowed data roots ({', '.join(map(str, roots))}); move the data "
                        f"under one of them or extend {ALLOWED_ROOTS_ENV}")


def list_sources(uri: str) -> list[Source]:
    """The data files a path or S3 URI names, sorted, each with a known format."""
    if is_s3(uri):
        return _list_s3(uri)
    path = Path(uri)
    check_allowed(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        usable = [p for p in files if p.suffix.lower() in FORMATS]
        if not usable:
            raise DataError(f"folder {path} holds no .csv, .jsonl or .parquet files"
                            + (f" (found {', '.join(p.name for p in files[:5])})" if files else " (it is empty)"))
        return [Source(str(p)) for p in usable]
    if not path.exists():
        raise DataError(f"dataset {path} does not exist; check data.path (relative paths resolve from {Path.cwd()})")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"dataset {path} has extension '{path.suffix}'; use .csv, .jsonl or .parquet")
    return [Source(str(path))]


def count_rows(sources: list[Source]) -> int | None:
    """How many rows the local files hold, counted without parsing them into frames (what a progress estimate
    needs); None when any is on S3 (counting would fetch it twice) or cannot be counted."""
    import csv

    total = 0
    try:
        for source in sources:
            path = Path(source.uri)
            if is_s3(source.uri) or not path.is_file():
                return None
            if source.suffix == ".parquet":
                import pyarrow.parquet as pq

                total += pq.ParquetFile(path).metadata.num_rows
            elif source.suffix == ".csv":
                with path.open(newline="", encoding="utf-8") as f:
                    total += max(sum(1 for row in csv.reader(f) if row) - 1, 0)  # the header is no row
            else:
                with path.open("rb") as f:
                    total += sum(1 for line in f if line.strip())
    except (OSError, ValueError, csv.Error):
        return None
    return total


def _list_s3(uri: str) -> list[Source]:
    bucket, prefix = split_s3(uri)
    client = s3_client()
    keys: list[str] = []
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, uri) from None
    if prefix in keys:  # an exact object
        keys = [prefix]
    usable = sorted(k for k in keys if Path(k).suffix.lower() in FORMATS)
    if not usable and Path(prefix).suffix.lower() in FORMATS:
        raise DataError(f"{uri} does not exist; check data.path (list the bucket with `aws s3 ls`)")
    if not usable:
        raise DataError(f"{uri} matches no .csv, .jsonl or .parquet objects"
                        + (f" (found {', '.join(keys[:5])})" if keys else " (the prefix is empty)")
                        + "; check data.path")
    return [Source(f"s3://{bucket}/{k}") for k in usable]


def read_bytes(source: Source) -> bytes:
    if is_s3(source.uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(source.uri)
        try:
            return _retrying(lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, source.uri) from None
    return Path(source.uri).read_bytes()


S3_READ_BYTES = 8 << 20  # one ranged GET of a streamed S3 object: what a streaming reader holds at most


class S3Reader(io.RawIOBase):
    """An S3 object as a seekable binary file, read by ranged GETs of at most ``block`` bytes: pandas' chunked
    readers and pyarrow's Parquet batches stream it, so memory stays bounded however large the object is.
    ``largest_read`` and ``position`` are what a test checks."""

    def __init__(self, uri: str, block: int):
        from botocore.exceptions import BotoCoreError, ClientError

        self.uri, self.block, self.position, self.largest_read = uri, block, 0, 0
        self.bucket, self.key = split_s3(uri)
        self.client = s3_client()
        try:
            self.size = int(_retrying(lambda: self.client.head_object(Bucket=self.bucket, Key=self.key))
                            ["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, uri) from None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(base + offset, 0)
        return self.position

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        want = min(len(buffer), self.block, self.size - self.position)
        if want <= 0:
            return 0
        span = f"bytes={self.position}-{self.position + want - 1}"
        try:
            data = _retrying(lambda: self.client.get_object(Bucket=self.bucket, Key=self.key, Range=span)
                             ["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, self.uri) from None
        buffer[:len(data)] = data
        self.position += len(data)
        self.largest_read = max(self.largest_read, len(data))
        return len(data)


def open_binary(source: Source) -> io.BufferedReader:
    """One file, local or on S3, as a buffered binary stream (an S3 object by ranged reads of ``S3_READ_BYTES``,
    never fetched whole)."""
    if is_s3(source.uri):
        return io.BufferedReader(S3Reader(source.uri, S3_READ_BYTES), buffer_size=S3_READ_BYTES)
    return Path(source.uri).open("rb")


def parse(data: bytes, source: Source) -> pd.DataFrame:
    """Parse one file's bytes by extension, with errors that name the file and the fix."""
    name = source.uri
    if not data.strip():
        raise DataError(f"{name} is empty (0 bytes of data); export it again")
    try:
        if source.suffix == ".parquet":
            return pd.read_parquet(io.BytesIO(data))
        if data.startswith(b"\xef\xbb\xbf"):
            raise DataError(f"{name} starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")
        text = data.decode("utf-8")
        if source.suffix == ".csv":
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        return _read_jsonl(text, name)
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 (byte {data[exc.start]:#x} at offset {exc.start}; latin-1 or "
                        "cp1252?); re-export it as UTF-8") from None
    except DataError:
        raise
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first = str(exc).splitlines()[0][:200]
        kind = {".csv": "CSV", ".parquet": "Parquet"}.get(source.suffix, "JSON Lines")
        raise DataError(f"{name} cannot be parsed as {kind}: {first}; fix or re-export the file") from None


def _read_jsonl(text: str, name: str) -> pd.DataFrame:
    try:
        return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except ValueError:
        import json

        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    raise DataError(f"{name} line {number} is not a JSON object; each line must be one record")
            except json.JSONDecodeError as exc:
                raise DataError(f"{name} line {number} is not valid JSON ({exc.msg}: {line[:60]!r}); "
                                "the file may be truncated, re-export it") from None
        raise


def read_dataset(uri: str | list[str]) -> pd.DataFrame:
    """Read every file under a path or S3 prefix into one frame; all files must share one schema.

    A list of paths (``data.path`` may be one) gives one frame of the columns that every path's data has, in
    the first path's order: e.g. the text column of a labelled CSV and of a JSONL file with other labels.
    """
    if isinstance(uri, list):
        return _read_several(uri)
    sources = list_sources(uri)
    frames = [(s, parse(read_bytes(s), s)) for s in sources]
    first_source, first = frames[0]
    for source, frame in frames[1:]:
        if set(frame.columns) != set(first.columns):
            raise DataError(f"files under {uri} have different columns: {Path(first_source.uri).name} has "
                            f"{sorted(first.columns)}, {Path(source.uri).name} has {sorted(frame.columns)}; "
                            "export them with one schema")
    if len(frames) == 1:
        return first
    return pd.concat([f for _, f in frames], ignore_index=True)


def _read_several(uris: list[str]) -> pd.DataFrame:
    frames = [read_dataset(u) for u in uris]
    shared = [c for c in frames[0].columns if all(c in f.columns for f in frames[1:])]
    if not shared:
        found = "; ".join(f"{u}: {list(f.columns)}" for u, f in zip(uris, frames, strict=True))
        raise DataError(f"the files of data.path have no column in common ({found}); export them with the column "
                        "the model reads (e.g. text) or name one file")
    return pd.concat([f[shared] for f in frames], ignore_index=True)


def write_bytes(data: bytes, uri: str) -> None:
    """Write to a local path or an S3 URI (used for reports and tests)."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            _retrying(s3_client().put_object, Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, uri) from None
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)


# --------------------------------------------------------------------------- folders (checkpoint mirroring)


def upload_folder(local: Path, uri: str) -> None:
    """Copy a local folder's files under ``uri`` (an s3:// prefix or a local folder)."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        write_bytes(path.read_bytes(), f"{uri.rstrip('/')}/{path.relative_to(local).as_posix()}")


def list_keys(uri: str) -> list[str]:
    """Relative names of every file under ``uri`` (recursive)."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = split_s3(uri.rstrip("/") + "/")
        def every_key() -> list[str]:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", [])]

        try:
            return _retrying(every_key)
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, uri) from None
    root = Path(uri)
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def download_folder(uri: str, local: Path) -> None:
    """Copy every file under ``uri`` into a local folder."""
    for key in list_keys(uri):
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(Source(f"{uri.rstrip('/')}/{key}")))


def delete_folder(uri: str) -> None:
    """Remove every file under ``uri``."""
    if not is_s3(uri):
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    keys = [{"Key": prefix + k} for k in list_keys(uri)]
    try:
        for i in range(0, len(keys), 1000):
            _retrying(s3_client().delete_objects, Bucket=bucket, Delete={"Objects": keys[i:i + 1000]})
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, uri) from None
