"""Several models in one `tuneops serve` process, over real HTTP against the real SQLite MLflow store: one server
start (`tuneops serve --serving-file`, a real process) for every check. Each model answers at its own route with its
own version; /metadata lists both; an unknown name is a 404 listing the served ones and /invocations a 404 naming the
routes; one model is promoted while both are under load (no failed request on either, the promoted one switches,
the other does not); a new version that fails to load leaves its model serving the old one, reported in /metadata,
while the other answers on; each model's answered rows are in its own prediction log.

No training of its own: both models are registry copies of the session's one tiny champion (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import LABELS
from tests.tuneops.serving.test_server import TEXTS, _call
from tuneops.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

A, B = "multi-a", "multi-b"


@pytest.fixture(scope="module")
def two_models(champion) -> dict[str, str]:
    """A (v1 champion, v2 waiting) and B (v2 champion): registry copies of the session champion, tags copied; the
    champion's own version, to compute the expected labels with."""
    from tuneops.registry import versions as registry
    from tuneops.registry.tracking import client

    c = client()
    source = registry.alias_version(champion, "champion")
    tags = c.get_model_version(champion, source).tags
    for name in (A, B):
        for _ in range(2):
            copied = c.copy_model_version(f"models:/{champion}/{source}", name)
            for key, value in tags.items():
                c.set_model_version_tag(name, copied.version, key, value)
    registry.promote(A, "1", "multi-model test: A's first champion")
    registry.promote(B, "2", "multi-model test: B's champion")
    return {"champion": champion, "version": source}


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    predictions: dict[str, Path]
    answered: dict[str, list[str]] = field(default_factory=lambda: {A: [], B: []})
    """The request ids each model answered (what its prediction log must hold)."""

    def score(self, name: str, texts: list[str]) -> tuple[int, dict, dict]:
        status, headers, body = _call(self.url, "POST", f"/models/{name}/invocations", {"inputs": texts})
        if status == 200:
            self.answered[name] += body["request_ids"]
        return status, headers, body


@pytest.fixture(scope="module")
def served(two_models, company_csv, tmp_path_factory) -> Iterator[Server]:
    """`tuneops serve --serving-file` over A and B, each config with its own prediction log; polls every 0.3 s."""
    from tuneops.serving.server import wait_until_ready

    folder = tmp_path_factory.mktemp("multi-serve")
    predictions = {name: folder / f"predictions-{name}" for name in (A, B)}
    for name in (A, B):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({
            "data": {"path": company_csv, "label_column": "category"}, "registry": {"model_name": name},
            "monitoring": {"predictions": str(predictions[name])}, "serving": {"max_wait_ms": 5}}))
    (folder / "serving.yaml").write_text(yaml.safe_dump({"models": [{"config": f"{A}.yaml"},
                                                                    {"config": f"{B}.yaml"}]}))
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "serve", "--serving-file",
                                 str(folder / "serving.yaml"), "--port", str(port), "--set",
                                 "serving.poll_interval_s=0.3", "--set", "serving.log_flush_s=0.5"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log, predictions)
    try:
        try:
            wait_until_ready(server.url, 180, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}:\n{log.read_text()[-4000:]}")
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def test_each_model_answers_at_its_own_route_and_an_unknown_one_is_a_404_with_the_list(served, two_models):
    """A and B answer at /models/NAME/invocations with their own versions (and the champion's labels); /metadata lists
    both with version, alias and tags; an unknown name is a 404 listing the served names; /invocations, with two
    models, a 404 naming their routes; a bad request to one model is its 4xx."""
    from tuneops.serving.scoring import score_texts

    expected = score_texts(two_models["champion"], two_models["version"], pd.DataFrame({"text": TEXTS}), "text")
    for name, version in ((A, "1"), (B, "2")):
        status, headers, body = served.score(name, TEXTS)
        assert status == 200, body
        assert (body["model_name"], body["model_version"], headers["x-tuneops-model-version"]) == \
            (name, version, version)
        assert [p["label"] for p in body["predictions"]] == expected.label.tolist()

    status, headers, meta = _call(served.url, "GET", "/metadata")
    assert status == 200 and headers["x-tuneops-model-version"] == f"{A}=1, {B}=2"
    assert meta["served_models"] == [A, B] and "model_name" not in meta
    entries = {m["model_name"]: m for m in meta["models"]}
    assert [(entries[n]["model_version"], entries[n]["alias"], entries[n]["alias_points_to"]) for n in (A, B)] == \
        [("1", "champion", "1"), ("2", "champion", "2")]
    assert entries[A]["tags"]["tuneops.data.fingerprint"] == entries[A]["data_fingerprint"] != ""
    assert entries[B]["route"] == f"/models/{B}/invocations" and entries[B]["load_failure"] is None
    assert entries[A]["prediction_log"] == str(served.predictions[A])
    assert entries[A]["worker"]["requests"] == 1 and entries[B]["worker"]["rows"] == len(TEXTS)
    status, _, one = _call(served.url, "GET", f"/models/{B}/metadata")
    assert status == 200 and one["model_version"] == "2" and one["model_name"] == B

    status, _, error = _call(served.url, "POST", "/models/nobody/invocations", {"inputs": ["hi"]})
    assert status == 404 and error["error_code"] == "MODEL_NOT_FOUND" and error["served_models"] == [A, B]
    assert f"no model named 'nobody' is served here; served: {A}, {B}" in error["message"]
    assert _call(served.url, "GET", "/models/nobody/metadata")[0] == 404
    status, _, error = _call(served.url, "POST", "/invocations", {"inputs": ["hi"]})
    assert status == 404 and error["error_code"] == "MODEL_NOT_NAMED" and error["served_models"] == [A, B]
    assert f"POST /models/{A}/invocations" in error["message"] and f"POST /models/{B}/invocations" in \
        error["message"]
    status, headers, error = served.score(A, [])
    assert status == 400 and "no rows" in error["message"] and headers["x-tuneops-model-version"] == "1"
    assert _call(served.url, "GET", f"/models/{A}/invocations")[0] == 405
    assert _call(served.url, "GET", "/ping")[0] == 200


def test_a_promotion_of_one_model_under_load_leaves_the_other_alone(served, tmp_path):
    """Two clients on each model send non-stop while A is promoted to v2: no request fails on either, A's clients see
    v1 then v2 (never v1 again), B's see v2 only. Then B's champion moves to a version that cannot load: B keeps
    answering with v2 and /metadata names the failure, A answers on. After shutdown each model's prediction log
    holds exactly the rows it answered."""
    from tuneops.monitoring.check import Window, read_window
    from tuneops.registry import versions as registry
    from tuneops.registry.tracking import client

    clients = [A, A, B, B]
    seen: list[list[str]] = [[] for _ in clients]
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                code, head, answer = served.score(clients[i], [TEXTS[(i + n) % len(TEXTS)]])
            except OSError as exc:
                failures.append(f"client {i}: {exc!r}")
                continue
            if code != 200 or answer["predictions"][0]["label"] not in LABELS or \
                    answer["model_name"] != clients[i] or head["x-tuneops-model-version"] != answer["model_version"]:
                failures.append(f"client {i}: {code} {answer}")
                continue
            seen[i].append(answer["model_version"])

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while min(len(s) for s in seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    registry.promote(A, "2", "multi-model test: promotion under load")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(s.count("2") >= 5 for s in seen[:2]):
        time.sleep(0.05)
    settled = [len(s) for s in seen]
    while time.monotonic() < deadline and not all(len(s) >= n + 5 for s, n in zip(seen, settled, strict=True)):
        time.sleep(0.05)  # B's clients keep being answered after A's swap too
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    for versions in seen[:2]:
        assert versions[0] == "1" and versions[-1] == "2" and versions == sorted(versions), \
            versions[:3] + versions[-3:]
    for versions in seen[2:]:
        assert len(versions) >= 10 and set(versions) == {"2"}
    meta = {m["model_name"]: m for m in _call(served.url, "GET", "/metadata")[2]["models"]}
    assert (meta[A]["model_version"], meta[A]["alias_points_to"], meta[A]["worker"]["swaps"]) == ("2", "2", 1)
    assert (meta[B]["model_version"], meta[B]["worker"]["swaps"]) == ("2", 0)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("artifact_path: broken\nflavors: {}\n")  # no python_function flavor
    c = client()
    version = c.create_model_version(B, source=str(broken)).version
    c.set_registered_model_alias(B, "champion", version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = {m["model_name"]: m for m in _call(served.url, "GET", "/metadata")[2]["models"]}
        if meta[B]["load_failure"] is not None:
            break
        time.sleep(0.1)
    assert meta[B]["load_failure"]["version"] == str(version), meta[B]
    assert meta[B]["model_version"] == "2" and meta[B]["alias_points_to"] == str(version)
    assert f"cannot load {B} v{version}" in meta[B]["load_failure"]["error"]
    assert meta[A]["load_failure"] is None and meta[A]["model_version"] == "2"
    for name in (B, A):
        status, _, body = served.score(name, TEXTS[:1])
        assert status == 200 and body["model_version"] == "2", body

    os.killpg(served.proc.pid, signal.SIGTERM)  # graceful: the buffered predictions are written
    served.proc.wait(timeout=60)
    for name, versions in ((A, {"1", "2"}), (B, {"2"})):
        logged = read_window(str(served.predictions[name]), Window())
        assert sorted(logged.request_id) == sorted(served.answered[name]), name
        assert set(logged.model_version.astype(str)) == versions
    text = served.log.read_text()
    assert f"now serving {A} v2 (was v1)" in text and f"loading {B} v{version} failed; still serving v2" in text
