"""Micro-batching: concurrent requests coalesced into one model call (:class:`MicroBatcher`), its results split
back per request (:class:`Answer`), and what the worker has done (:class:`Stats`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneops.serving.model_slot import LoadedModel, ModelSlot
    from tuneops.serving.online_log import OnlinePredictionLog


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


@dataclass(frozen=True)
class Answer:
    """What one request gets back: the pyfunc's output rows, their prediction-log ids, the version that made them."""

    predictions: list[dict[str, Any]]
    request_ids: list[str]
    version: str


@dataclass
class Stats:
    """What this worker has done since it started (reported by /metadata)."""

    requests: int = 0
    rows: int = 0
    model_calls: int = 0
    largest_call_rows: int = 0
    bad_requests: int = 0
    errors: int = 0
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class MicroBatcher:
    """Coalesce concurrent requests into one model call of at most ``max_batch_size`` rows.

    A call takes every queued request that fits and, when it still has room, waits once up to ``max_wait_ms`` for
    more (the clients the last call just answered are typically sending again); requests that arrive while the
    model is busy are queued and form the next call. The model runs on one thread of its own
    (one call at a time, using every CPU thread torch has), so the event loop keeps accepting requests. All rows
    of one call are scored by the one model taken from the slot when the call starts, stamped once (score_batch's
    timestamp and per-row request ids, the time of the call) and handed to the prediction log in one piece; each
    request gets its slice.
    """

    def __init__(self, slot: ModelSlot, max_batch_size: int, max_wait_ms: float, stats: Stats,
                 prediction_log: OnlinePredictionLog | None = None):
        self.slot, self.max_batch_size, self.max_wait_s = slot, max_batch_size, max_wait_ms / 1000
        self.stats, self.prediction_log = stats, prediction_log
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: _Pending | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneops-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tuneops-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def score(self, texts: list[str]) -> Answer:
        """Score these texts in the next model call that has room for them."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _next_batch(self) -> list[_Pending]:
        first = self._held or await self._queue.get()
        self._held = None
        batch, rows = [first], len(first.texts)
        rows = self._drain(batch, rows)
        if self.max_wait_s > 0 and rows < self.max_batch_size and self._held is None:
            # Room left: wait once for company. Under a closed loop the clients answered by the last call are
            # sending again right now; without this they would form a call of their own after this one.
            await asyncio.sleep(self.max_wait_s)
            self._drain(batch, rows)
        return batch

    def _drain(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests into ``batch`` while they fit; the first that does not is held for the next call."""
        while rows < self.max_batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if rows + len(item.texts) > self.max_batch_size:
                self._held = item  # first in the next call
                break
            batch.append(item)
            rows += len(item.texts)
        return rows

    def _call_model(self, loaded: LoadedModel, texts: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """One model call on the model thread: score, stamp, log; the output rows and request ids, in order."""
        import pandas as pd

        from tuneops.serving.scoring import score_frame, stamp_predictions

        scored = score_frame(loaded.model, pd.DataFrame({loaded.column: texts}), loaded.column, loaded.version)
        stamped = stamp_predictions(scored, datetime.now(UTC))
        if self.prediction_log is not None:
            self.prediction_log.append(stamped)
        outputs = [c for c in scored.columns if c not in (loaded.column, "model_version")]
        return scored[outputs].to_dict(orient="records"), stamped["request_id"].tolist()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._next_batch() if not p.future.done()]  # a client that gave up
            if not batch:
                continue
            loaded = self.slot.current  # this call's model, whatever is swapped in meanwhile
            texts = [t for p in batch for t in p.texts]
            try:
                records, ids = await loop.run_in_executor(self._executor, self._call_model, loaded, texts)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which answers 500 and logs it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.stats.model_calls += 1
            self.stats.largest_call_rows = max(self.stats.largest_call_rows, len(texts))
            start = 0
            for p in batch:
                end = start + len(p.texts)
                if not p.future.done():
                    p.future.set_result(Answer(records[start:end], ids[start:end], loaded.version))
                start = end

