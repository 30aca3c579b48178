"""`make demo-monitoring` tells its story with the real MiniLM: run it as a user would and read what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.integration
def test_monitoring_demo_detects_alerts_retrains_and_promotes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"TUNEOPS_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "demos/monitoring.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    control = out[out.index("=== 2."):out.index("=== 3.")]
    assert "drift: False; alerts sent: 0; retrain: no significant drift" in control
    drift = out[out.index("=== 3."):out.index("=== 4.")]
    assert "drift: True" in drift and "alert received by the webhook" in drift and "Drifting signals:" in drift
    assert "started train_model/monitoring-demo" in drift
    assert "champion is now v2 (was v1)" in out
    new, old = map(int, re.search(r"new champion: (\d+)% \(old champion: (\d+)%", out).groups())
    assert old == 0 and new >= 60, out[-1500:]
