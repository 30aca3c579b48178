"""A quiet console: `tuneops train` and `tuneops predict` print tuneops' lines and Prefect's run and task lines,
nothing of the libraries below them (no warnings, no progress bars); --verbose / TUNEOPS_LOG_LEVEL=DEBUG brings
the libraries' output back."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_config
from tuneops import console
from tuneops.cli import build_parser

# A Prefect-formatted log line, e.g. "18:45:20.200 | INFO    | tuneops.training.engine - step 10/22 ..."
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (?P<level>[A-Z]+) *\| (?P<source>.+?) - ")
OWN_SOURCES = ("Flow run ", "Task run ", "tuneops", "prefect")
# What `tuneops train` and `tuneops predict` print themselves (tuneops/cli.py)
SUMMARY = ("=" * 72, "model ", "test ", "baseline ", "gate ", "merge check ", "aliases ", "mlflow run ", "wrote ")
FOREIGN = {
    "a Python warning": re.compile(r"\b[A-Za-z]*Warning: |warnings\.warn\("),
    "a progress bar": re.compile(r"it/s\]|s/it\]|\d+%\||Loading weights|Downloading artifacts|Writing model shards"),
    "MLflow's log or prints": re.compile(r" (INFO|WARNING) mlflow|Successfully registered model|Created version '"),
    "DeepSpeed's log": re.compile(r"\[WARNING\]|Setting accelerator to CPU"),
}


def fresh_env(**extra: str) -> dict[str, str]:
    """This process's environment less what importing tuneops here set in it: the command must quiet itself."""
    env = dict(os.environ)
    for key in env.pop(console.QUIETED_ENV, "").split(","):
        env.pop(key, None)
    env.pop(console.LEVEL_ENV, None)
    return {**env, **extra}


def tuneops(*args: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tuneops.cli", *args], capture_output=True, text=True,
                          env=fresh_env(**env))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def foreign_lines(output: str) -> list[str]:
    """Lines that are neither a tuneops or Prefect log line nor the command's own summary."""
    out = []
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if not line.strip() or line.startswith(SUMMARY) or (match and match["source"].startswith(OWN_SOURCES)):
            continue
        out.append(line)
    return out


def assert_quiet(output: str) -> None:
    for what, pattern in FOREIGN.items():
        found = [line for line in output.splitlines() if pattern.search(line)]
        assert not found, f"{what} on the console:\n" + "\n".join(found)
    assert not foreign_lines(output), "output of a library on the console:\n" + "\n".join(foreign_lines(output))


@pytest.mark.slow
@pytest.mark.integration
def test_train_and_predict_print_only_tuneops_and_prefect_lines(tiny_model, company_csv, tmp_path):
    config = tmp_path / "tiny.yaml"
    cfg = tiny_config(company_csv, tiny_model, "console-quiet", training={"epochs": 2})
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"text": ["how do I change my pin", "my card has not arrived"]}).to_csv(queries, index=False)

    trained = tuneops("train", str(config))
    assert_quiet(trained)
    assert "Flow run '" in trained and "Finished in state Completed()" in trained  # Prefect's run and task lines
    steps = [line for line in trained.splitlines() if "tuneops.training - step " in line]
    estimate = re.compile(r"; [\d,.]+ samples/s, ((about|under) .+ left|done in .+)$")
    assert steps and all(estimate.search(s) for s in steps), steps
    assert "aliases      challenger -> v1, champion -> v1" in trained

    predicted = tuneops("predict", "--config", str(config), "--input", str(queries), "--output",
                        str(tmp_path / "out.csv"))
    assert_quiet(predicted)
    assert "wrote 2 predictions by console-quiet v1" in predicted

    # --verbose brings the libraries' output back (here transformers' progress bar as the model loads)
    loud = tuneops("predict", "--config", str(config), "--input", str(queries), "--output", str(tmp_path / "o.csv"),
                   "--verbose")
    assert FOREIGN["a progress bar"].search(loud) and foreign_lines(loud), loud


QUIET_OR_NOT = """
import logging, sys, warnings
import tuneops  # quiets the libraries (tuneops.console), unless TUNEOPS_LOG_LEVEL is DEBUG
logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
logging.getLogger("somelib.sub").warning("library warning")
logging.getLogger("somelib.sub").error("library error")
logging.getLogger("tuneops.demo").warning("tuneops warning")
logging.getLogger("tuneops.demo").debug("tuneops debug")
exec("import warnings; warnings.warn('library python warning', UserWarning)", {"__name__": "somelib"})
exec("import warnings; warnings.warn('tuneops python warning', UserWarning)", {"__name__": "tuneops.demo"})
import tqdm
for _ in tqdm.tqdm(range(3), desc="library bar", file=sys.stdout):
    pass
"""


def run_snippet(**env: str) -> str:
    done = subprocess.run([sys.executable, "-c", QUIET_OR_NOT], capture_output=True, text=True, env=fresh_env(**env))
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_the_quiet_console_keeps_tuneops_warnings_and_library_errors_only():
    out = run_snippet()
    assert "tuneops warning" in out and "tuneops python warning" in out and "library error" in out
    for noise in ("library warning", "library python warning", "library bar", "tuneops debug"):
        assert noise not in out, out


def test_log_level_debug_shows_everything():
    out = run_snippet(TUNEOPS_LOG_LEVEL="DEBUG")
    for line in ("library warning", "library python warning", "library bar", "tuneops debug", "tuneops warning"):
        assert line in out, out


def test_log_level_warning_hides_tuneops_info_lines_and_a_wrong_level_is_refused():
    out = subprocess.run([sys.executable, "-c", "import logging, tuneops; logging.getLogger('tuneops.x').info('hi');"
                          "logging.getLogger('tuneops.x').warning('careful')"], capture_output=True, text=True,
                         env=fresh_env(TUNEOPS_LOG_LEVEL="warning")).stderr
    assert "careful" in out and "hi" not in out
    done = subprocess.run([sys.executable, "-m", "tuneops.cli", "rollback", "m"], capture_output=True, text=True,
                          env=fresh_env(TUNEOPS_LOG_LEVEL="loud"))
    assert done.returncode == 2 and "TUNEOPS_LOG_LEVEL='loud' is not a level" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [["--verbose", "train", "c.yaml"], ["train", "c.yaml", "--verbose"],
                                  ["-v", "predict", "--config", "c", "--input", "i", "--output", "o"]])
def test_verbose_goes_before_or_after_the_command(argv):
    assert build_parser().parse_args(argv).verbose is True
    quiet = [a for a in argv if a not in ("--verbose", "-v")]
    assert build_parser().parse_args(quiet).verbose is False
