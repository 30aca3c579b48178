"""`tuneops serve` over real HTTP (uvicorn on a free loopback port) against the real SQLite MLflow store: the
champion's answers, /metadata, a promotion swapped in under load with no failed request, the online prediction
log, every bad request answered with a 4xx that names it, micro-batching, and a causal LM served.

The session's tiny champion (tests/conftest.py) is the only model trained for the classifier tests: its version is
copied twice into the registry under another name, so a promotion has somewhere to go without a second training.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import LABELS
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS
from tuneops.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "serve-classifier"
TEXTS = ["my card has not arrived", "change my pin", "what is the exchange rate", "how do I activate my card"]


def _call(url: str, method: str, path: str, body: bytes | str | dict | None = None,
          content_type: str | None = "application/json") -> tuple[int, dict, dict]:
    """One HTTP request; returns status, headers and the decoded JSON body (every answer of the server is JSON)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            decoded = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:  # /version answers plain text, as MLflow's server does
            decoded = {"text": raw.decode()}
        return response.status, {k.lower(): v for k, v in response.getheaders()}, decoded
    finally:
        conn.close()


@contextlib.contextmanager
def _in_process(spec) -> Iterator[str]:
    """The server app under a real uvicorn in a thread of this process (no second torch import to wait for)."""
    import uvicorn

    from tuneops.serving.server import create_app, wait_until_ready

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(spec), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, 120, alive=thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def two_versions(champion) -> str:
    """NAME v1 and v2: two registry versions of the session champion's model (tags copied), v1 the champion."""
    from tuneops.registry import versions as registry
    from tuneops.registry.tracking import client

    c = client()
    source = registry.alias_version(champion, "champion")
    tags = c.get_model_version(champion, source).tags
    for _ in range(2):
        copied = c.copy_model_version(f"models:/{champion}/{source}", NAME)
        for key, value in tags.items():
            c.set_model_version_tag(NAME, copied.version, key, value)
    registry.promote(NAME, "1", "server test: first champion")
    return NAME


def _expected(version: str, texts: list[str]) -> pd.DataFrame:
    from tuneops.serving.scoring import score_texts

    return score_texts(NAME, version, pd.DataFrame({"text": texts}), "text")


def test_serve_answers_with_the_champion_and_swaps_a_promotion_in_under_load(two_versions, company_csv, tmp_path):
    """`tuneops serve --config` (a real process) answers /invocations with the champion's labels and says which
    version answered; /metadata names it with its metrics and data fingerprint. While four clients keep sending
    one text per request, the champion is promoted (tuneops' own promote): the answering version switches from 1
    to 2 with no failed request and never back, and every answered row is in the prediction log, in score_batch's
    format, by the version that answered it."""
    from tuneops.monitoring.check import Window, read_window
    from tuneops.registry import versions as registry
    from tuneops.registry.tracking import client
    from tuneops.serving.server import wait_until_ready

    log_dir = tmp_path / "predictions"
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": company_csv, "label_column": "category"},
                                      "registry": {"model_name": two_versions},
                                      "monitoring": {"predictions": str(log_dir)}}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    with server_log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "serve", "--config", str(config), "--port",
                                 str(port), "--set", "serving.poll_interval_s=0.3", "--set",
                                 "serving.log_flush_s=0.5"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        try:
            wait_until_ready(url, 180, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}:\n{server_log.read_text()[-4000:]}")
        status, headers, body = _call(url, "POST", "/invocations",
                                      {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}})
        assert status == 200, body
        expected = _expected("1", TEXTS)
        assert [p["label"] for p in body["predictions"]] == expected.label.tolist()
        assert [p["confidence"] for p in body["predictions"]] == pytest.approx(expected.confidence.tolist(), abs=1e-5)
        assert set(body["predictions"][0]) == {"label", "confidence"}
        assert body["model_version"] == "1" and headers["x-tuneops-model-version"] == "1"
        assert len(set(body["request_ids"])) == len(TEXTS)

        status, _, meta = _call(url, "GET", "/metadata")
        tags = client().get_model_version(two_versions, "1").tags
        assert status == 200
        assert (meta["model_name"], meta["model_version"], meta["alias"]) == (two_versions, "1", "champion")
        assert meta["data_fingerprint"] == tags["tuneops.data.fingerprint"] and meta["data_fingerprint"]
        assert meta["metrics"]["test_accuracy"] == pytest.approx(float(tags["tuneops.metric.test_accuracy"]))
        assert meta["alias_points_to"] == "1"
        assert meta["models"][0]["model_version"] == "1" and meta["load_failure"] is None

        seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]
        failures: list[str] = []
        stop = threading.Event()

        def client_loop(i: int) -> None:
            n = 0
            while not stop.is_set():
                text = TEXTS[(i + n) % len(TEXTS)]
                n += 1
                try:
                    code, head, answer = _call(url, "POST", "/invocations", {"inputs": [text]})
                except OSError as exc:
                    failures.append(f"client {i}: {exc!r}")
                    continue
                if code != 200 or answer["predictions"][0]["label"] not in LABELS:
                    failures.append(f"client {i}: {code} {answer}")
                    continue
                assert head["x-tuneops-model-version"] == answer["model_version"]
                seen[i].append((code, answer["model_version"]))

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while min(len(s) for s in seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.promote(two_versions, "2", "server test: promotion under load")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(sum(v == "2" for _, v in s) >= 5 for s in seen):
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        for versions in ([v for _, v in s] for s in seen):
            assert versions[0] == "1" and versions[-1] == "2", versions[:3] + versions[-3:]
            assert versions == sorted(versions), "a client saw the old version again after the new one"
        status, headers, meta = _call(url, "GET", "/metadata")
        assert (meta["model_version"], meta["alias_points_to"], meta["worker"]["swaps"]) == ("2", "2", 1)
        assert headers["x-tuneops-model-version"] == "2"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # graceful: the buffered predictions are written
            proc.wait(timeout=60)
    answered = len(TEXTS) + sum(len(s) for s in seen)
    logged = read_window(str(log_dir), Window())
    assert list(logged.columns) == ["text", "label", "confidence", "model_version", "timestamp", "request_id"]
    assert len(logged) == answered and logged.request_id.is_unique
    assert set(logged.model_version.astype(str)) == {"1", "2"}
    assert "now serving" in server_log.read_text()


@pytest.fixture(scope="module")
def pinned(two_versions) -> Iterator[str]:
    """NAME v1, pinned, served in process with small limits: 5 rows a request, 50 characters a text."""
    from tuneops.config import ServingConfig
    from tuneops.serving.spec import build_spec

    serving = ServingConfig(max_rows=5, max_text_chars=50, max_wait_ms=30, log_predictions=False)
    with _in_process(build_spec(None, serving, model_uri=f"models:/{two_versions}/1")) as url:
        yield url


BAD_REQUESTS = {
    "malformed JSON": ("POST", "/invocations", b'{"dataframe_records": [', "application/json", 400,
                       "not valid JSON"),
    "JSON that is not an object": ("POST", "/invocations", b"[1, 2]", "application/json", 400, "must be an object"),
    "no MLflow key": ("POST", "/invocations", {"records": [{"text": "hi"}]}, "application/json", 400,
                      "exactly one of the keys"),
    "no text column (records)": ("POST", "/invocations", {"dataframe_records": [{"txt": "hi"}]}, "application/json",
                                 400, "no 'text' column"),
    "no text column (split)": ("POST", "/invocations", {"dataframe_split": {"columns": ["msg"], "data": [["hi"]]}},
                               "application/json", 400, "no 'text' column"),
    "no text column (CSV)": ("POST", "/invocations", "msg\nhi\n", "text/csv", 400, "no 'text' column"),
    "a number as text": ("POST", "/invocations", {"dataframe_records": [{"text": "ok"}, {"text": 5}]},
                         "application/json", 400, "row 1: 'text' must be a string, got int"),
    "a null text": ("POST", "/invocations", {"inputs": {"text": [None]}}, "application/json", 400,
                    "must be a string, got null"),
    "an object as text": ("POST", "/invocations", {"instances": [{"text": {"a": 1}}]}, "application/json", 400,
                          "must be a string, got dict"),
    "a row that is not an object": ("POST", "/invocations", {"dataframe_records": ["hi"]}, "application/json", 400,
                                    "row 0 is not an object"),
    "a ragged split": ("POST", "/invocations", {"dataframe_split": {"columns": ["text"], "data": [["a", "b"]]}},
                       "application/json", 400, "row 0 is not a list of 1 values"),
    "empty batch": ("POST", "/invocations", {"dataframe_records": []}, "application/json", 400, "no rows"),
    "empty inputs": ("POST", "/invocations", {"inputs": []}, "application/json", 400, "no rows"),
    "over max_rows": ("POST", "/invocations", {"inputs": ["hi"] * 6}, "application/json", 413,
                      "6 rows, more than serving.max_rows = 5"),
    "a text over max_text_chars": ("POST", "/invocations", {"inputs": ["x" * 51]}, "application/json", 413,
                                   "51 characters long, more than serving.max_text_chars = 50"),
    "a body over the size limit": ("POST", "/invocations", b" " * 80_000, "application/json", 413,
                                   "more than this server accepts"),
    "unsupported content type": ("POST", "/invocations", "hi", "text/plain", 415, "not supported"),
    "unknown route": ("GET", "/predict", None, None, 404, "no route GET /predict"),
    "wrong method on /invocations": ("GET", "/invocations", None, None, 405, "does not take GET"),
    "wrong method on /ping": ("POST", "/ping", b"{}", "application/json", 405, "does not take POST"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_json_error_that_names_it(pinned, case):
    """Each wrong request gets its 4xx and a JSON body naming the problem; none is a 500, none stops the server."""
    method, path, body, content_type, status, message = BAD_REQUESTS[case]
    got, headers, answer = _call(pinned, method, path, body, content_type)
    assert got == status, answer
    assert message in answer["message"] and answer["error_code"]
    assert headers["x-tuneops-model-version"] == "1"
    assert _call(pinned, "POST", "/invocations", {"inputs": ["change my pin"]})[0] == 200  # still answering


def test_one_model_also_answers_at_its_named_route(pinned):
    """With one model served, /invocations and /models/NAME/invocations both answer; another name is a 404 that lists
    the served one; /metadata keeps the one model's fields at the top level and lists it under models."""
    status, _, answer = _call(pinned, "POST", f"/models/{NAME}/invocations", {"inputs": TEXTS[:2]})
    assert status == 200 and answer["model_name"] == NAME and answer["model_version"] == "1"
    assert answer["predictions"] == _call(pinned, "POST", "/invocations", {"inputs": TEXTS[:2]})[2]["predictions"]
    status, _, error = _call(pinned, "POST", "/models/other/invocations", {"inputs": ["hi"]})
    assert status == 404 and error["served_models"] == [NAME] and f"served: {NAME}" in error["message"]
    meta = _call(pinned, "GET", "/metadata")[2]
    assert (meta["model_name"], meta["model_version"], meta["route"]) == (NAME, "1", f"/models/{NAME}/invocations")
    assert [(m["model_name"], m["model_version"]) for m in meta["models"]] == [(NAME, "1")]
    assert _call(pinned, "GET", f"/models/{NAME}/metadata")[2]["model_version"] == "1"


def test_every_mlflow_request_layout_gives_the_same_answer(pinned):
    """dataframe_records, dataframe_split, inputs (rows, columns or texts), instances and CSV: one answer."""
    texts = TEXTS[:3]
    bodies = [({"dataframe_records": [{"text": t} for t in texts]}, "application/json"),
              ({"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}, "application/json"),
              ({"inputs": texts}, "application/json"), ({"inputs": {"text": texts}}, "application/json"),
              ({"instances": [{"text": t} for t in texts]}, "application/json"),
              ("text\n" + "\n".join(texts) + "\n", "text/csv; charset=utf-8")]
    expected = _expected("1", texts).label.tolist()
    for body, content_type in bodies:
        status, _, answer = _call(pinned, "POST", "/invocations", body, content_type)
        assert status == 200, (body, answer)
        assert [p["label"] for p in answer["predictions"]] == expected, body
    assert _call(pinned, "GET", "/ping")[0] == 200 and _call(pinned, "GET", "/health")[0] == 200
    import mlflow

    assert _call(pinned, "GET", "/version")[2] == {"text": mlflow.__version__}


def test_concurrent_requests_are_coalesced_into_fewer_model_calls(pinned):
    """16 one-text requests sent at once are answered by fewer than 16 model calls, each with its own text's
    prediction (as if scored alone)."""
    texts = [TEXTS[i % len(TEXTS)] + f" please {i}" for i in range(16)]
    expected = _expected("1", texts)
    before = _call(pinned, "GET", "/metadata")[2]["worker"]
    answers: dict[int, dict] = {}
    barrier = threading.Barrier(len(texts))

    def send(i: int) -> None:
        barrier.wait()
        answers[i] = _call(pinned, "POST", "/invocations", {"inputs": [texts[i]]})[2]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    after = _call(pinned, "GET", "/metadata")[2]["worker"]
    assert [answers[i]["predictions"][0]["label"] for i in range(16)] == expected.label.tolist()
    assert [answers[i]["predictions"][0]["confidence"] for i in range(16)] == \
        pytest.approx(expected.confidence.tolist(), abs=1e-4)
    calls = after["model_calls"] - before["model_calls"]
    assert after["requests"] - before["requests"] == 16
    assert 1 <= calls < 16 and after["largest_call_rows"] > 1, after


def test_a_causal_lm_champion_is_served(generator):
    """A generator's champion answers prompts with the columns of its pyfunc, exactly as in process (greedy)."""
    import mlflow

    from tuneops.config import ServingConfig
    from tuneops.serving.spec import build_spec

    prompts = ["Which intent: How do I change my PIN?", "Which intent: my card still has not arrived"]
    expected = mlflow.pyfunc.load_model(f"models:/{generator}@champion").predict(pd.DataFrame({"prompt": prompts}))
    from tuneops.registry import versions as registry

    version = registry.alias_version(generator, "champion")
    spec = build_spec(None, ServingConfig(log_predictions=False), model_uri=f"models:/{generator}@champion")
    with _in_process(spec) as url:
        status, headers, answer = _call(url, "POST", "/invocations",
                                        {"dataframe_records": [{"prompt": p} for p in prompts]})
        assert status == 200, answer
        assert [list(row) for row in answer["predictions"]] == [GENERATED_COLUMNS, GENERATED_COLUMNS]
        assert [row["response"] for row in answer["predictions"]] == expected.response.tolist()
        assert answer["model_version"] == version == headers["x-tuneops-model-version"]
        status, _, error = _call(url, "POST", "/invocations", {"dataframe_records": [{"text": prompts[0]}]})
        assert status == 400 and "no 'prompt' column" in error["message"]
        meta = _call(url, "GET", "/metadata")[2]
        assert meta["task"] == "causal_lm" and meta["input_column"] == "prompt"


def test_serve_refuses_what_it_cannot_serve_and_prints_the_mlflow_command(two_versions, company_csv, tmp_path):
    """No model named: exit 1 with the fix. A model without a champion: its name, the store and the fix, no
    traceback. --mlflow-command: the `mlflow models serve` line, with the store and PATH it needs."""
    from tests.conftest import run_cli

    done = run_cli("serve")
    assert done.returncode == 1 and "needs --config CONFIG" in done.stderr
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": company_csv, "label_column": "category"},
                                      "registry": {"model_name": "nobody-trained-this"}}))
    done = run_cli("serve", "--config", str(config), "--port", "1")
    assert done.returncode == 1 and "nobody-trained-this has no 'champion' alias" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("serve", "--config", str(config), "--port", "0")
    assert done.returncode == 2 and "--port 0" in done.stderr, done.stderr
    done = run_cli("serve", "--model-uri", f"models:/{two_versions}@champion", "--mlflow-command")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert f"MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']}" in line
    assert f"PATH={Path(sys.executable).parent}" in line
    assert f"models serve -m models:/{two_versions}/" in line and "--env-manager local" in line


class _FailsOnBoom:
    """A pyfunc that answers like a classifier but fails on the text 'boom': an unexpected error inside the model."""

    def predict(self, context, model_input, params=None):
        texts = model_input["text"].tolist()
        if "boom" in texts:
            raise RuntimeError("the model broke on 'boom'")
        return pd.DataFrame({"label": ["ok"] * len(texts), "confidence": [1.0] * len(texts)})


def test_an_unexpected_model_error_is_a_logged_500_with_a_json_body(tmp_path, caplog):
    """A failure inside the model is no bad request: 500 with a JSON body naming it, the traceback in the server
    log, and the server keeps answering the next request."""
    import logging

    import mlflow
    from mlflow.models import infer_signature

    from tuneops.config import ServingConfig
    from tuneops.serving.spec import build_spec

    class Model(_FailsOnBoom, mlflow.pyfunc.PythonModel):
        pass

    folder = tmp_path / "fails-on-boom"
    example = pd.DataFrame({"text": ["hi"]})
    mlflow.pyfunc.save_model(str(folder), python_model=Model(),
                             signature=infer_signature(example, _FailsOnBoom().predict(None, example)))
    spec = build_spec(None, ServingConfig(log_predictions=False), model_uri=str(folder))
    with caplog.at_level(logging.ERROR, logger="tuneops.serving.server"), _in_process(spec) as url:
        status, _, answer = _call(url, "POST", "/invocations", {"inputs": ["fine", "boom"]})
        assert status == 500 and answer["error_code"] == "INTERNAL_ERROR"
        assert "RuntimeError: the model broke on 'boom'" in answer["message"]
        status, headers, answer = _call(url, "POST", "/invocations", {"inputs": ["fine"]})
        assert status == 200 and answer["predictions"] == [{"label": "ok", "confidence": 1.0}]
        assert headers["x-tuneops-model-version"] == str(folder)
    assert any("internal error answering POST /invocations" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_verified_runtime_serves_and_an_unverifiable_one_is_refused(two_versions, company_csv, tmp_path):
    """`serving.runtime: onnx` with a config: the server checks onnx against fp32 on the version's validation split
    (recorded on the version), then answers with fp32's labels and says which runtime answered; the same runtime
    asked for a plain model URI (no version to record a check on) is refused before serving."""
    from tuneops.config import ServingConfig, load_config
    from tuneops.errors import ConfigError
    from tuneops.registry.tracking import client
    from tuneops.serving.model_slot import load
    from tuneops.serving.spec import build_spec

    config = tmp_path / "serve_onnx.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": company_csv, "label_column": "category"},
                                      "registry": {"model_name": two_versions},
                                      "serving": {"runtime": "onnx", "log_predictions": False}}))
    cfg = load_config(str(config), [])
    texts = ["I still have not received my new card", "what is the exchange rate for euros"]
    with _in_process(build_spec(cfg, cfg.serving, version="1")) as url:
        status, headers, answer = _call(url, "POST", "/invocations", {"inputs": texts})
        meta = _call(url, "GET", "/metadata")[2]
    assert status == 200 and meta["runtime"] == "onnx"
    assert [p["label"] for p in answer["predictions"]] == _expected("1", texts).label.tolist()
    assert client().get_model_version(two_versions, "1").tags["tuneops.runtime.onnx.passed"] == "True"
    with pytest.raises(ConfigError, match="serving.runtime onnx needs a registered model served with --config"):
        load(build_spec(None, ServingConfig(runtime="onnx"), model_uri=f"models:/{two_versions}/1"), None)


def test_a_call_with_room_waits_for_the_clients_just_answered():
    """Closed loop: two requests are queued while the model is busy, a third arrives a few ms after the model is
    free (a client the last call just answered). With max_wait_ms the next call takes all three; without a wait
    it takes the two and the third makes a call of its own."""
    import asyncio
    import time as clock

    from tuneops.serving.batching import MicroBatcher, Stats
    from tuneops.serving.model_slot import LoadedModel, ModelSlot

    class Schema:
        def input_names(self):
            return ["text"]

    class Model:
        metadata = type("Meta", (), {"get_input_schema": lambda self: Schema()})()
        calls: list[int] = []

        def predict(self, frame):
            self.calls.append(len(frame))
            clock.sleep(0.06)  # the model is busy: requests queue meanwhile
            return pd.DataFrame({"label": ["ok"] * len(frame), "confidence": [1.0] * len(frame)})

    async def scenario(wait_ms: float) -> list[int]:
        model = Model()
        model.calls = []
        batcher = MicroBatcher(ModelSlot(LoadedModel(model, "1", "text", {})), 32, wait_ms, Stats())
        batcher.start()
        first = asyncio.ensure_future(batcher.score(["a"]))
        await asyncio.sleep(wait_ms / 1000 + 0.015)  # the first call (alone, after its wait) is running
        queued = [asyncio.ensure_future(batcher.score([t])) for t in ("b", "c")]
        await first  # the model is free: b and c are queued, d comes 5 ms later
        await asyncio.sleep(0.005)
        late = asyncio.ensure_future(batcher.score(["d"]))
        await asyncio.gather(*queued, late)
        await batcher.stop()
        return model.calls

    assert asyncio.run(scenario(30.0)) == [1, 3]
    assert asyncio.run(scenario(0.0)) == [1, 2, 1]
