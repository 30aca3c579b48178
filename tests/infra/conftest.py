"""The real local stack (`tuneops up`, the code path of `make up`) on free loopback ports under a
temporary TUNEOPS_HOME, a finished train_model deployment run on it, and headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_config
from tuneops.ports import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The documentation's screenshots (docs/img/) are tracked files: a test run writes its screenshots to pytest's temporary
# folder. `make screenshots` alone sets TUNEOPS_SCREENSHOTS=docs/img and TUNEOPS_SCREENSHOT_CONFIG to the demo's
# config, so the browser tests run the real demo training on the stack and retake the documentation's images from it.
SCREENSHOT_CONFIG = os.environ.get("TUNEOPS_SCREENSHOT_CONFIG")
UI_MODEL_NAME = "banking77-tiny"
RUN_TIMEOUT_S = 3600 if SCREENSHOT_CONFIG else 300


@dataclass
class Stack:
    home: Path
    prefect_url: str
    mlflow_url: str
    env: dict[str, str]

    @property
    def api(self) -> str:
        return f"{self.prefect_url}/api"

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def pids(self) -> dict[str, int]:
        out = {}
        for path in (self.home / "stack").glob("*.pid"):
            out[path.stem] = json.loads(path.read_text())["pid"]
        return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def running_stack(home: Path, *up_args: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`tuneops up UP_ARGS` on free ports with ``home`` as TUNEOPS_HOME (``env`` added to the environment);
    `tuneops down` afterwards, checked to leave no process behind. ``up_output`` holds what `up` printed."""
    prefect_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "TUNEOPS_HOME": str(home), **(env or {})}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    s = Stack(home, f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}", env)
    started: dict[str, int] = {}
    try:
        proc = s.cli("up", *up_args, "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port))
        started = s.pids()
        assert proc.returncode == 0, f"tuneops up failed:\n{proc.stdout}\n{proc.stderr}"
        s.up_output = proc.stdout  # type: ignore[attr-defined]
        yield s
    finally:
        started.update(s.pids())
        down = s.cli("down", timeout=120)
        leftovers = {name: pid for name, pid in started.items() if alive(pid)}
        assert down.returncode == 0 and not leftovers, f"tuneops down left {leftovers}: {down.stdout}{down.stderr}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request) -> Iterator[Stack]:
    """`tuneops up` on free ports; `tuneops down` afterwards, checked to leave no process behind.

    A test module may set ``STACK_ENV`` (a dict) for the environment the stack starts with."""
    with running_stack(tmp_path_factory.mktemp("stack-home"), env=getattr(request.module, "STACK_ENV", {})) as s:
        yield s


def wait_for_run(api: str, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout} s (state {run['state']['type']})")


@pytest.fixture(scope="module")
def trained_run(stack, tiny_model, company_csv) -> dict:
    """A train_model/manual run started the way the UI's Run button does (POST create_flow_run), with
    the tiny config as its parameters, executed by the real process worker; returns the finished run."""
    import httpx

    deployment = httpx.get(f"{stack.api}/deployments/name/train_model/manual").json()
    if SCREENSHOT_CONFIG:  # `make screenshots`: the demo's own config, so the docs show the demo's champion
        from tuneops.config import load_config

        config = load_config(SCREENSHOT_CONFIG)
    else:
        config = tiny_config(company_csv, tiny_model, UI_MODEL_NAME)
    response = httpx.post(f"{stack.api}/deployments/{deployment['id']}/create_flow_run",
                          json={"parameters": {"config": config.model_dump(mode="json")}})
    assert response.status_code == 201, response.text
    return wait_for_run(stack.api, response.json()["id"])


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through selenium. Missing browser = failure, not a skip (CI installs it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    profile = tempfile.mkdtemp(prefix="tuneops-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver, *expected: str, timeout: float = 60) -> str:
    """Wait until the rendered page's visible text contains every expected string; return the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(e in text for e in expected):
            return text
        time.sleep(0.5)
    missing = [e for e in expected if e not in text]
    raise AssertionError(f"{driver.current_url} never showed {missing}; it shows:\n{text[:2000]}")


@pytest.fixture(scope="session")
def ui_model_name() -> str:
    """The registered model the UI pages show: the tiny test model's, or the demo's under `make screenshots`."""
    if SCREENSHOT_CONFIG:
        from tuneops.config import load_config

        return load_config(SCREENSHOT_CONFIG).registry.model_name
    return UI_MODEL_NAME


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory) -> Path:
    """Where screenshots go: pytest's temporary folder, or TUNEOPS_SCREENSHOTS (set by `make screenshots`)."""
    chosen = os.environ.get("TUNEOPS_SCREENSHOTS")
    return Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def screenshot(screenshots_dir) -> Callable[..., Path]:
    """``screenshot(driver, name)`` saves a small PNG (scaled down, 256-colour palette) under screenshots_dir."""

    def take(driver, name: str, width: int = 1000) -> Path:
        from io import BytesIO

        from PIL import Image

        screenshots_dir.mkdir(parents=True, exist_ok=True)
        image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        path = screenshots_dir / f"{name}.png"
        image.quantize(colors=256).save(path, optimize=True)
        return path

    return take
