"""Registered champions (a classifier and a causal LM) outside the training process, served over real HTTP by
`mlflow models serve`; the classifier also loaded on "another machine" from nothing but a copy of the MLflow
store and its artifacts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import LABELS, tiny_config
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS
from tuneops.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TEXTS = ["my card has not arrived", "change my pin"]


def _wait_for_ping(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll /ping until the server has loaded the model; fail with its log if it dies or never answers."""
    from tuneops.serving.server import wait_until_ready

    try:
        wait_until_ready(url, timeout, alive=lambda: proc.poll() is None)
    except RuntimeError:
        pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
    except TimeoutError:
        pytest.fail(f"mlflow models serve did not answer /ping within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its uvicorn worker: they share the process group the test created for them."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _serve_and_invoke(model_uri: str, column: str, values: list[str], folder: Path) -> list[dict]:
    """Start `mlflow models serve` on a free loopback port, POST the values to /invocations, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # mlflow starts the scoring server as `uvicorn ...`, found on PATH: the venv's bin folder.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_ping(url, proc, log)
        body = {"dataframe_split": {"columns": [column], "data": [[v] for v in values]}}
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            return json.loads(response.read())["predictions"]
    finally:
        _stop(proc)


def test_mlflow_models_serve_answers_invocations_with_the_champion(champion, tmp_path):
    """`mlflow models serve -m models:/NAME@champion --env-manager local` works offline and answers a real
    HTTP POST to /invocations with a label and a confidence per text. The server runs in its own
    process from an empty folder, so it gets the model (and the tuneops code packed with it) from the
    registry alone."""
    predictions = _serve_and_invoke(f"models:/{champion}@champion", "text", TEXTS, tmp_path)
    assert len(predictions) == 2
    for row in predictions:
        assert set(row) == {"label", "confidence"}
        assert row["label"] in LABELS and 0 < row["confidence"] <= 1


def test_mlflow_models_serve_answers_prompts_with_a_generator(generator, tmp_path):
    """A causal-LM champion served the same way answers each prompt with a response, exactly as the
    registered pyfunc does in process (greedy decoding)."""
    import mlflow

    prompts = ["Which intent: How do I change my PIN?", "Which intent: my card still has not arrived"]
    predictions = _serve_and_invoke(f"models:/{generator}@champion", "prompt", prompts, tmp_path)
    expected = mlflow.pyfunc.load_model(f"models:/{generator}@champion").predict(pd.DataFrame({"prompt": prompts}))
    assert [list(row) for row in predictions] == [GENERATED_COLUMNS, GENERATED_COLUMNS]
    assert [row["prompt_tokens"] for row in predictions] == expected.prompt_tokens.tolist()
    assert [row["response"] for row in predictions] == expected.response.tolist()


LOAD_ON_MACHINE_B = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"text": json.loads(sys.argv[2])}))
import tuneops
print(json.dumps({"labels": out.label.tolist(), "confidences": out.confidence.tolist(),
                  "tuneops_code": tuneops.__file__}))
"""


def relocate_store(db: Path, old: Path, new: Path) -> int:
    """Rewrite every text cell of an MLflow SQLite store that names ``old`` to name ``new`` instead.

    MLflow records absolute artifact URIs (experiment artifact_location, run artifact_uri, model
    version source/storage_location, logged model artifact_location), so a store moved to another
    machine needs exactly this rewrite, as it would after `rsync`-ing a file store to a new path.
    Returns how many cells changed.
    """
    changed = 0
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                changed += conn.execute(
                    f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (str(old), str(new), str(old))).rowcount
    return changed


def _cells_naming(db: Path, text: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        hits = []
        for table in tables:
            for column in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                rows = conn.execute(f'SELECT "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\' AND '
                                    f'instr("{column}", ?) > 0', (text,)).fetchall()
                hits += [f"{table}.{column}={r[0]}" for r in rows]
    return hits


def test_model_registered_on_one_machine_predicts_on_another_from_a_copied_store(
        prefect_server, tiny_model, company_csv, tmp_path, monkeypatch):
    """A registered model needs nothing from the machine that trained it but the MLflow store.

    "Machine A" is a fresh TUNEOPS_HOME with its own SQLite store, base model copy and data copy; the
    model is trained and registered there. Only ``mlflow.db`` and ``mlartifacts/`` are copied to
    "machine B", then machine A's whole folder is deleted: training outputs, base model, data, store.
    The copied store's absolute artifact URIs are rewritten to the new location (what moving a store
    takes; the test checks no cell still names A's store). Provenance params and tags still name A's
    data and base model paths, which no longer exist: loading must not need them. A fresh Python process on B (empty
    TUNEOPS_HOME and HF cache, working directory in B, hub offline, HTTP proxies pointing at a dead
    port so any network attempt fails) loads ``models:/NAME@champion`` and predicts exactly what the
    model predicted on A, running the tuneops code packed inside the copied artifacts.
    """
    from tuneops.flows.train_model import train_model
    from tuneops.serving.scoring import score_texts

    name = "portable-model"
    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    home_a = machine_a / "home"
    shutil.copytree(tiny_model, machine_a / "base-model")
    shutil.copy(company_csv, machine_a / "company.csv")
    with monkeypatch.context() as m:
        m.setenv("TUNEOPS_HOME", str(home_a))
        m.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home_a / 'mlflow.db'}")
        cfg = tiny_config(str(machine_a / "company.csv"), str(machine_a / "base-model"), name)
        outcome = train_model(config=cfg)
        assert outcome.registration.promoted, outcome.decision.reason
        expected = score_texts(name, outcome.registration.version, pd.DataFrame({"text": TEXTS}), "text")

    machine_b.mkdir()
    shutil.copy(home_a / "mlflow.db", machine_b / "mlflow.db")
    shutil.copytree(home_a / "mlartifacts", machine_b / "mlartifacts")
    shutil.rmtree(machine_a)
    assert relocate_store(machine_b / "mlflow.db", home_a, machine_b) > 0
    assert _cells_naming(machine_b / "mlflow.db", str(home_a)) == []
    # Provenance still (rightly) records where A's data and base model were; they are gone now.
    assert any("base-model" in cell for cell in _cells_naming(machine_b / "mlflow.db", str(machine_a)))

    for folder in ("home", "hf", "cwd"):
        (machine_b / folder).mkdir()
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "TUNEOPS_", "AWS_", "PREFECT_", "HF_")) and k != "PYTHONPATH"}
    dead_proxy = "http://127.0.0.1:9"
    env = {**keep, "MLFLOW_TRACKING_URI": f"sqlite:///{machine_b / 'mlflow.db'}",
           "TUNEOPS_HOME": str(machine_b / "home"), "HF_HOME": str(machine_b / "hf"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy,
           "ALL_PROXY": dead_proxy, "NO_PROXY": ""}
    proc = subprocess.run([sys.executable, "-c", LOAD_ON_MACHINE_B, f"models:/{name}@champion", json.dumps(TEXTS)],
                          env=env, cwd=machine_b / "cwd", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["labels"] == expected.label.tolist()
    assert loaded["confidences"] == pytest.approx(expected.confidence.tolist(), abs=1e-6)
    assert Path(loaded["tuneops_code"]).resolve().is_relative_to(machine_b.resolve()), loaded["tuneops_code"]


def test_loading_a_registered_model_for_prediction_imports_no_prefect(champion):
    """Serving needs MLflow and the model's own code, not the orchestrator: a fresh process loads the champion,
    predicts, and has not imported Prefect."""
    code = ("import sys, mlflow, pandas as pd; "
            f"m = mlflow.pyfunc.load_model('models:/{champion}@champion'); "
            "out = m.predict(pd.DataFrame({'text': ['my card has not arrived']})); "
            "print(out.label.iloc[0]); bad = sorted(n for n in sys.modules if n.split('.')[0] == 'prefect'); "
            "print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.split()[0] in LABELS
