"""What an ``/invocations`` request holds: its texts, in any of MLflow's JSON layouts or CSV (:func:`parse_texts`),
or a :class:`BadRequest` that names the problem and the fix."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneops.config import ServingConfig

REQUEST_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")


class BadRequest(Exception):
    """A request the server refuses: the HTTP status and a message that names the problem and the fix."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def body_limit(serving: ServingConfig) -> int:
    """Largest request body accepted, in bytes: max_rows texts of max_text_chars, each char JSON-escaped (6 bytes),
    plus room for the envelope."""
    return serving.max_rows * (serving.max_text_chars * 6 + 256) + 65_536


def _json_frame(payload: Any, column: str) -> tuple[list[Any], list[str]]:
    """The values of ``column`` in an MLflow JSON payload, and the columns it has (for the error message)."""
    if not isinstance(payload, dict):
        raise BadRequest(400, f"the JSON body must be an object with one of the keys {', '.join(REQUEST_KEYS)} "
                         f"(got a JSON {type(payload).__name__}); e.g. {{\"dataframe_records\": [{{\"{column}\": "
                         "\"...\"}]}")
    keys = [k for k in REQUEST_KEYS if k in payload]
    unknown = sorted(set(payload) - set(REQUEST_KEYS) - {"params"})
    if len(keys) != 1 or unknown:
        found = ", ".join(sorted(payload)) or "none"
        raise BadRequest(400, f"the JSON body needs exactly one of the keys {', '.join(REQUEST_KEYS)} (found: "
                         f"{found}); e.g. {{\"dataframe_split\": {{\"columns\": [\"{column}\"], \"data\": "
                         "[[\"...\"]]}}")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or \
                not isinstance(data.get("data"), list):
            raise BadRequest(400, "dataframe_split must be an object with a 'columns' list and a 'data' list of rows "
                             f"(e.g. {{\"columns\": [\"{column}\"], \"data\": [[\"...\"]]}})")
        columns = data["columns"]
        if column not in columns:
            return [], [str(c) for c in columns]
        at = columns.index(column)
        values = []
        for number, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise BadRequest(400, f"dataframe_split row {number} is not a list of {len(columns)} values (one per "
                                 "column)")
            values.append(row[at])
        return values, [str(c) for c in columns]
    if isinstance(data, dict):  # columnar: {"text": [...]} (inputs / instances as MLflow takes them)
        if column not in data:
            return [], [str(c) for c in data]
        values = data[column]
        return (values if isinstance(values, list) else [values]), [str(c) for c in data]
    if isinstance(data, str) and key in ("inputs", "instances"):
        return [data], [column]
    if not isinstance(data, list):
        raise BadRequest(400, f"{key} must be a list of rows (got a JSON {type(data).__name__})")
    if key in ("inputs", "instances") and all(not isinstance(row, dict) for row in data):
        return data, [column]  # a plain list of texts
    values, columns = [], []
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise BadRequest(400, f"{key} row {number} is not an object of column values (got a JSON "
                             f"{type(row).__name__}); send e.g. {{\"{column}\": \"...\"}} per row")
        if column not in row:
            return [], sorted(row)
        columns = columns or sorted(row)
        values.append(row[column])
    return values, columns or [column]


def parse_texts(body: bytes, content_type: str | None, column: str, serving: ServingConfig) -> list[str]:
    """The texts of an ``/invocations`` body, or a :class:`BadRequest` naming what is wrong with it.

    JSON (``application/json``, the default when no type is given) in any of MLflow's four layouts, or CSV
    (``text/csv``) with a header row. Every value must be a string (a causal LM's conversation goes as JSON
    text, as the pyfunc takes it) of at most ``max_text_chars`` characters, and there must be 1 to
    ``max_rows`` of them.
    """
    mime = (content_type or "application/json").split(";")[0].strip().lower()
    if mime == "text/csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
            raise BadRequest(400, f"the CSV body cannot be read ({exc}); send a header row naming '{column}'") \
                from None
        columns = [str(c) for c in frame.columns]
        values: list[Any] = frame[column].tolist() if column in frame.columns else []
    elif mime == "application/json" or mime.endswith("+json"):
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"the request body is not valid JSON ({exc}); send e.g. "
                             f"{{\"dataframe_records\": [{{\"{column}\": \"...\"}}]}}") from None
        values, columns = _json_frame(payload, column)
    else:
        raise BadRequest(415, f"content type '{content_type}' is not supported; send application/json (MLflow's "
                         "dataframe_records / dataframe_split / inputs / instances) or text/csv",
                         error_code="UNSUPPORTED_MEDIA_TYPE")
    if column not in columns:
        raise BadRequest(400, f"the request has no '{column}' column (columns: {columns}); this model reads its "
                         f"input from '{column}'")
    if not values:
        raise BadRequest(400, "the request holds no rows (an empty batch); send at least one "
                         f"'{column}' value")
    if len(values) > serving.max_rows:
        raise BadRequest(413, f"the request holds {len(values)} rows, more than serving.max_rows = "
                         f"{serving.max_rows}; split it into smaller requests (or use score_batch for bulk "
                         "scoring)", error_code="TOO_MANY_ROWS")
    for number, value in enumerate(values):
        if not isinstance(value, str):
            shown = "null" if value is None else type(value).__name__
            raise BadRequest(400, f"row {number}: '{column}' must be a string, got {shown} ({json.dumps(value)[:80]})")
        if len(value) > serving.max_text_chars:
            raise BadRequest(413, f"row {number}: '{column}' is {len(value)} characters long, more than "
                             f"serving.max_text_chars = {serving.max_text_chars}", error_code="TEXT_TOO_LONG")
    return values

