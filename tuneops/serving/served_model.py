"""One model a server process serves (:class:`ServedModel`): its spec, the slot that holds its loaded version, its
alias follower, its own micro-batcher, prediction log and counters. A process serves one or several side by side;
each follows its own alias, batches its own requests and writes its own log, so what happens to one (a promotion,
a version that fails to load, a burst of requests) leaves the others alone."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any

from tuneops.serving.batching import Answer, MicroBatcher, Stats
from tuneops.serving.model_slot import AliasFollower, LoadedModel, ModelSlot
from tuneops.serving.online_log import OnlinePredictionLog
from tuneops.serving.request_body import BadRequest, body_limit, parse_texts
from tuneops.serving.spec import ServeSpec

log = logging.getLogger("tuneops.serving.server")  # the server's one log, whichever module writes

SERVING_SHOWN = ("max_batch_size", "max_wait_ms", "max_rows", "max_text_chars", "poll_interval_s", "runtime")
"""The serving settings /metadata shows for a model."""


class ServedModel:
    """One served model: :meth:`start` it with its loaded version inside the event loop, :meth:`answer` requests,
    :meth:`stop` it at shutdown."""

    def __init__(self, spec: ServeSpec):
        self.spec = spec
        self.serving = spec.settings()
        self.max_body = body_limit(self.serving)
        self.stats = Stats()
        self.slot: ModelSlot | None = None
        self.follower: AliasFollower | None = None
        self.batcher: MicroBatcher | None = None
        self.prediction_log: OnlinePredictionLog | None = None

    @property
    def name(self) -> str | None:
        """The registered model name (its route's ``NAME``); None for a plain URI."""
        return self.spec.model_name

    @property
    def version(self) -> str | None:
        """The version answering now (None before :meth:`start`)."""
        return self.slot.current.version if self.slot is not None else None

    def start(self, loaded: LoadedModel) -> None:
        """Serve ``loaded``: its batcher (on the running event loop), alias follower and prediction log start."""
        self.slot = ModelSlot(loaded)
        self.follower = AliasFollower(self.spec, self.slot, self.serving.poll_interval_s)
        if self.spec.log_output:
            self.prediction_log = OnlinePredictionLog(self.spec.log_output, self.serving.log_flush_s)
        self.batcher = MicroBatcher(self.slot, self.serving.max_batch_size, self.serving.max_wait_ms, self.stats,
                                    self.prediction_log)
        self.batcher.start()
        self.follower.start()
        if self.prediction_log is not None:
            self.prediction_log.start()
        log.info("serving %s v%s (pid %d)", self.spec.describe(), loaded.version, os.getpid())

    def stopping(self) -> None:
        """Tell the alias follower to stop (:meth:`stop` waits for it): a process stopping several models tells every
        follower first."""
        if self.follower is not None:
            self.follower.stop(wait=False)

    async def stop(self) -> None:
        """Stop following, finish the model calls under way, write what the prediction log holds."""
        if self.follower is not None:
            self.follower.stop()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()

    def check_length(self, length: str | None) -> None:
        """Refuse a request whose Content-Length says its body is too large, before it is read."""
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self.stats.bad_requests += 1
            raise BadRequest(413, f"the request body is {int(length)} bytes, more than this server accepts "
                             f"({self.max_body}: serving.max_rows x serving.max_text_chars); split it",
                             error_code="BODY_TOO_LARGE")

    def texts(self, body: bytes, content_type: str | None) -> list[str]:
        """The texts of a request body, or a :class:`BadRequest` (counted) naming what is wrong with it."""
        assert self.slot is not None
        try:
            if len(body) > self.max_body:
                raise BadRequest(413, f"the request body is {len(body)} bytes, more than this server accepts "
                                 f"({self.max_body})", error_code="BODY_TOO_LARGE")
            return parse_texts(body, content_type, self.slot.current.column, self.serving)
        except BadRequest:
            self.stats.bad_requests += 1
            raise

    async def score(self, texts: list[str]) -> Answer:
        """Score texts in this model's next micro-batch."""
        assert self.batcher is not None
        answer = await self.batcher.score(texts)
        self.stats.requests += 1
        self.stats.rows += len(texts)
        return answer

    def metadata(self) -> dict[str, Any]:
        """What /metadata says about this model: the version's registry record, the alias followed and where it
        points, the serving settings, the prediction log, a failed load of a newer version, this worker's counters."""
        assert self.slot is not None and self.follower is not None
        meta = dict(self.slot.current.metadata)
        alias = self.spec.alias
        meta["alias"] = alias
        meta["following"] = alias is not None
        if alias is not None:
            pointed = self.follower.alias_points_to
            if pointed is None:  # not looked at since loading: what the loaded version's record says
                pointed = meta["model_version"] if alias in meta.get("aliases", []) else None
            meta["alias_points_to"] = pointed
        meta["route"] = self.spec.route
        meta["load_failure"] = self.follower.load_failure
        meta["serving"] = {k: self.spec.serving[k] for k in SERVING_SHOWN}
        meta["prediction_log"] = self.spec.log_output
        meta["worker"] = {"pid": os.getpid(), **asdict(self.stats), "swaps": self.follower.swaps}
        return meta
