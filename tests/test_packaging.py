"""Installing tuneops puts one package at the top of site-packages: `tuneops` (flows/, tasks/, monitoring/ and
infra/ install as tuneops.flows, ...), never generic names such as `tasks` that other distributions use."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

SOURCES = ("pyproject.toml", "README.md", "tuneops", "flows", "tasks", "monitoring", "infra")


@pytest.mark.slow
def test_the_wheel_holds_no_generic_top_level_package(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("tuneops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"tuneops", next(t for t in top if t.endswith(".dist-info"))}, top
    subpackages = [str(p.parent.relative_to(ROOT)) for p in (ROOT / "tuneops").rglob("__init__.py")]
    assert "tuneops/serving/runtimes" in subpackages and "tuneops/families/causal_lm" in subpackages
    for package in [*(f"tuneops/{f}" for f in ("flows", "tasks", "monitoring", "infra")), *subpackages]:
        assert f"{package}/__init__.py" in names, f"{package} is not in the wheel: list it in pyproject.toml"
    assert "tuneops/flows/train_model.py" in names and "tuneops/tasks/finetune.py" in names


def test_the_installed_project_imports_its_folders_under_the_tuneops_name(tmp_path):
    code = ("import importlib.util as u, tuneops.flows.train_model as f, tuneops.tasks.finetune as t; "
            "print(f.__file__, t.__file__); "
            "import sys; sys.exit(any(u.find_spec(n) for n in ('flows', 'tasks', 'monitoring', 'infra')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flows/train_model.py" in done.stdout and "tasks/finetune.py" in done.stdout
