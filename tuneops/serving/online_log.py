"""The online prediction log: what a server answers, stamped like score_batch's rows, so monitoring sees online
traffic (:class:`OnlinePredictionLog`)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("tuneops.serving.server")  # the server's one log, whichever module writes


class OnlinePredictionLog:
    """Online predictions, stamped per model call like score_batch's rows, appended to the prediction log.

    Rows are buffered and written every ``flush_s`` seconds (and at shutdown) as one new file per write under
    ``<output>/date=YYYY-MM-DD/``, with score_batch's writer pieces, so monitoring reads online and batch traffic
    alike. A write that fails is logged and retried at the next flush; at most ``max_buffered_rows`` wait, the
    oldest are dropped (and counted) beyond that, so a dead log store never stops the server answering.
    """

    def __init__(self, output: str, flush_s: float, fmt: str = "jsonl", max_buffered_rows: int = 200_000):
        from tuneops.serving.scoring import log_file_uri

        log_file_uri(output, datetime.now(UTC), fmt)  # refuses a file path or a bad format before serving starts
        self.output, self.flush_s, self.fmt, self.max_buffered_rows = output, flush_s, fmt, max_buffered_rows
        self.written_rows = self.dropped_rows = 0
        self._frames: list[pd.DataFrame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneops-prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, stamped: pd.DataFrame) -> None:
        with self._lock:
            self._frames.append(stamped)

    def flush(self) -> None:
        import pandas as pd

        from tuneops.data.storage import write_bytes
        from tuneops.serving.scoring import encode_table, log_file_uri

        with self._lock:
            frames, self._frames = self._frames, []
        if not frames:
            return
        rows = pd.concat(frames, ignore_index=True)
        for day, part in rows.groupby(rows["timestamp"].str.slice(0, 10), sort=True):
            first = datetime.fromisoformat(part["timestamp"].iloc[0])
            uri = log_file_uri(self.output, first, self.fmt)
            try:
                write_bytes(encode_table(part.reset_index(drop=True), self.fmt, name=f"output {uri}"), uri)
            except Exception:  # noqa: BLE001 - the log store being down must not stop serving; retried next flush
                log.exception("writing %d online predictions (%s) to %s failed; retrying at the next flush",
                              len(part), day, uri)
                self._requeue(part)
                continue
            self.written_rows += len(part)

    def _requeue(self, part: pd.DataFrame) -> None:
        with self._lock:
            self._frames.insert(0, part)
            waiting = sum(len(f) for f in self._frames)
            while waiting > self.max_buffered_rows and len(self._frames) > 1:
                dropped = self._frames.pop(0)
                waiting -= len(dropped)
                self.dropped_rows += len(dropped)
                log.error("dropped %d online predictions: the prediction log at %s stays unwritable",
                          len(dropped), self.output)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

