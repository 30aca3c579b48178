"""Every ``tuneops.*`` import resolves to a file the way a static tool finds it (pyright, an IDE's go-to-definition):
by the folders the installed project puts on the interpreter's path in plain ``.pth`` lines, and the files under
them. Nothing here imports the project: an import hook (the ``import ...`` lines of a ``.pth`` file, a meta-path
finder) is exactly what such tools cannot run, so it does not count.

``flows/``, ``tasks/``, ``monitoring/`` and ``infra/`` sit at the repository root and install as ``tuneops.flows``,
...; setuptools' default editable install maps them through an import hook, so static tools lost every import of
``tuneops.tasks.*`` (and, outside the checkout, of ``tuneops.*``). ``make install`` installs in setuptools' strict
editable mode instead: a tree of links to the project's files (``build/__editable__.*``) on a plain path entry.
The tree links the files that existed at install time; `make` re-links it when a module is added or removed.

Checked: every ``import tuneops...`` and ``from tuneops... import name`` (also inside functions and under
``if TYPE_CHECKING:``) in the project's Python files, each imported name a submodule or a name the module
defines; the modules that commands name as strings (``python -m tuneops...``, uvicorn's ``module:factory``,
``importlib.import_module("tuneops...")``); and that what they resolve to is this checkout's file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The scripts that wrote the old-format registry fixture run against the tuneops of their own commit (they say
# which, and refuse any other): their imports name that commit's modules.
OLD_FORMAT_SCRIPTS = ROOT / "tests" / "fixtures" / "registry_formats"
FOLDERS = ("tuneops", "flows", "tasks", "monitoring", "infra", "tests", "bench", "demos")
PACKAGE = "tuneops"


# --------------------------------------------------------------------------------------------- the static view


def site_dirs() -> list[Path]:
    return sorted({Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))})


def pth_entries(pth: Path) -> list[Path]:
    """The folders a ``.pth`` file adds to the path, as ``site`` reads them; ``import`` lines (code that installs a
    hook at start-up) and comments add none."""
    entries = []
    for line in pth.read_text().splitlines():
        line = line.rstrip()
        if not line or line.startswith("#") or line.startswith(("import ", "import\t")):
            continue
        folder = (pth.parent / line).resolve()
        if folder.is_dir():
            entries.append(folder)
    return entries


def static_path_entries(sites: list[Path] | None = None) -> list[Path]:
    """Where a static tool looks for ``tuneops``: the site folder itself when the project's files are installed
    there (a wheel), and the folders its ``.pth`` files name (an editable install)."""
    sites = site_dirs() if sites is None else sites
    found = [d for d in importlib.metadata.distributions(path=[str(s) for s in sites])
             if (d.metadata["Name"] or "").lower() == PACKAGE]
    assert found, f"{PACKAGE} is not installed in {sites} (make install)"
    entries: list[Path] = []
    for dist in found:
        for file in dist.files or []:
            where = Path(str(file.locate()))
            if file.parts[0] == PACKAGE:
                entries.append(where.parents[len(file.parts) - 1])
            elif file.suffix == ".pth" and where.is_file():
                entries.extend(pth_entries(where))
    return list(dict.fromkeys(entries))


def resolve_module(module: str, roots: list[Path]) -> Path | None:
    """The file of a dotted module under the first root that holds the whole chain of packages (a package is a
    folder with ``__init__.py``), or None."""
    parts = module.split(".")
    for root in roots:
        folder = root
        for part in parts[:-1]:
            folder = folder / part
            if not (folder / "__init__.py").is_file():
                break
        else:
            last = folder / parts[-1]
            for candidate in (last / "__init__.py", last.with_suffix(".py"), last.with_suffix(".pyi")):
                if candidate.is_file():
                    return candidate
    return None


def defined_names(path: Path) -> set[str] | None:
    """The names a module defines at its top level (also under if/try/with); None when it may define any name
    (a module ``__getattr__`` or a star import)."""
    names: set[str] = set()
    stack = list(ast.parse(path.read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if any(a.name == "*" for a in node.names):
                return None
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for block in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, block, []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return names


# --------------------------------------------------------------------------------------------- the project's imports


@dataclass(frozen=True)
class Reference:
    where: str
    """``path:line`` of the import."""
    module: str
    name: str | None = None
    """For ``from module import name``: the name, a submodule or something the module defines."""


def _tuneops(module: str | None) -> bool:
    return module is not None and (module == PACKAGE or module.startswith(PACKAGE + "."))


def references(path: Path, relative_to: Path = ROOT) -> list[Reference]:
    """Every ``tuneops`` module (and imported name) a file imports or names as a command's module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    shown = str(path.relative_to(relative_to)) if path.is_relative_to(relative_to) else str(path)
    found = []
    for node in ast.walk(tree):
        where = f"{shown}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Reference(where, a.name) for a in node.names if _tuneops(a.name)]
        elif isinstance(node, ast.ImportFrom) and not node.level and _tuneops(node.module):
            found += [Reference(where, node.module, a.name) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.List | ast.Tuple):  # [sys.executable, "-m", "tuneops.cli", ...]
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            found += [Reference(where, m) for flag, m in zip(values, values[1:], strict=False)
                      if flag == "-m" and isinstance(m, str) and _tuneops(m)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            text, func = node.args[0].value, ast.unparse(node.func)
            if func.endswith("import_module") and _tuneops(text):
                found.append(Reference(where, text))
            elif ":" in text and _tuneops(text.partition(":")[0]) and text.partition(":")[2].isidentifier():
                found.append(Reference(where, *text.split(":")))  # uvicorn.run("tuneops.x:factory", factory=True)
    return found


def project_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts and p.parent != OLD_FORMAT_SCRIPTS)


def unresolved(refs: list[Reference], roots: list[Path], checkout: Path = ROOT) -> list[str]:
    """What a static tool cannot follow with these roots, one line each."""
    wrong, names = [], {}
    for ref in refs:
        found = resolve_module(ref.module, roots)
        if found is None:
            line = f"{ref.where}: {ref.module}: no file under {[str(r) for r in roots]}"
            wrong += [line] if line not in wrong else []  # once for `from module import a, b, c`
            continue
        if not found.resolve().is_relative_to(checkout.resolve()):
            wrong.append(f"{ref.where}: {ref.module} resolves to {found.resolve()}, outside this checkout "
                         f"({checkout}): the environment's install is of another copy")
            continue
        if ref.name is None or (found.name == "__init__.py" and resolve_module(f"{ref.module}.{ref.name}", roots)):
            continue
        if found not in names:
            names[found] = defined_names(found)
        if names[found] is not None and ref.name not in names[found]:
            wrong.append(f"{ref.where}: from {ref.module} import {ref.name}: {found} defines no {ref.name}")
    return wrong


# --------------------------------------------------------------------------------------------- the checks


REFERENCES = [r for path in project_files() for r in references(path)]


def test_the_walk_sees_the_project():
    modules = {r.module for r in REFERENCES}
    assert {"tuneops.config", "tuneops.tasks.finetune", "tuneops.flows.train_model", "tuneops.monitoring.check",
            "tuneops.infra.stack", "tuneops.cli"} <= modules
    assert any(r.module == "tuneops.serving.server" and r.name == "app_from_environment" for r in REFERENCES)
    assert any(r.module == "tuneops.training.worker" and r.name is None for r in REFERENCES)  # python -m ...


def test_every_tuneops_import_resolves_in_the_checkout_as_an_ide_sees_it():
    """A static tool opened on the repository looks in the checkout first, then on the interpreter's path: the
    library resolves from tuneops/ itself, tuneops.tasks.* (tasks/ at the root) only through the install."""
    wrong = unresolved(REFERENCES, [ROOT, *static_path_entries()])
    assert not wrong, ("imports a static tool cannot follow (a module added or removed since the install? "
                       "`make install` re-links the editable tree):\n" + "\n".join(wrong))


def test_every_tuneops_import_resolves_from_the_install_alone():
    """Outside the checkout (another project using this environment, a notebook) only the install counts."""
    roots = static_path_entries()
    assert roots, ("the installed tuneops puts no folder on the path that a static tool can read (only an import "
                   "hook): install it with `make install` (setuptools' strict editable mode)")
    wrong = unresolved(REFERENCES, roots)
    assert not wrong, ("imports a static tool cannot follow (a module added or removed since the install? "
                       "`make install` re-links the editable tree):\n" + "\n".join(wrong))


def _fake_site(tmp_path: Path, pth_text: str) -> Path:
    """A site folder holding a tuneops installation whose one .pth file reads ``pth_text``."""
    site = tmp_path / "site-packages"
    info = site / "tuneops-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tuneops\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("__editable__.tuneops-0.1.0.pth,,\ntuneops-0.1.0.dist-info/METADATA,,\n")
    (site / "__editable__.tuneops-0.1.0.pth").write_text(pth_text)
    return site


def test_an_import_hook_is_not_a_path_a_static_tool_can_follow(tmp_path):
    """setuptools' default editable install (an import hook: the layout before strict mode) gives a static tool
    nothing to read, so the imports of the folders it maps (tuneops.tasks -> tasks/) do not resolve; the repository
    root as a plain path entry resolves tuneops.config but still not tuneops.tasks.*."""
    hooked = _fake_site(tmp_path / "hook", "import __editable___tuneops_0_1_0_finder; "
                        "__editable___tuneops_0_1_0_finder.install()\n")
    assert static_path_entries([hooked]) == []
    refs = [Reference("flows/train_model.py:11", "tuneops.tasks.finetune", "finetune_task"),
            Reference("flows/train_model.py:8", "tuneops.config", "TuneopsConfig")]
    assert len(unresolved(refs, static_path_entries([hooked]))) == 2
    checkout = _fake_site(tmp_path / "root", f"{ROOT}\n")
    assert static_path_entries([checkout]) == [ROOT.resolve()]
    (wrong,) = unresolved(refs, static_path_entries([checkout]))
    assert "tuneops.tasks.finetune: no file" in wrong


def test_a_name_the_module_does_not_define_is_caught(tmp_path):
    package = tmp_path / "tree" / "tuneops"
    (package / "serving").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "serving" / "__init__.py").write_text("from tuneops.serving.spec import build_spec\n")
    (package / "serving" / "spec.py").write_text("def build_spec():\n    pass\n")
    (package / "serving" / "lazy.py").write_text("def __getattr__(name):\n    return name\n")
    source = tmp_path / "user.py"
    source.write_text("from tuneops.serving import spec, build_spec\nfrom tuneops.serving.spec import gone\n"
                      "from tuneops.serving.lazy import anything\nimport tuneops.serving.moved\n"
                      "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'tuneops.serving.server'])\n")
    wrong = unresolved(references(source, tmp_path), [tmp_path / "tree"], checkout=tmp_path)
    assert [w.split(": ", 1)[1].split(":")[0] for w in wrong] == [
        "from tuneops.serving.spec import gone", "tuneops.serving.moved", "tuneops.serving.server"], wrong


@pytest.mark.parametrize("folder", ["flows", "tasks", "monitoring", "infra"])
def test_each_mapped_folder_is_in_the_static_view(folder):
    init = resolve_module(f"tuneops.{folder}", static_path_entries())
    assert init is not None and init.resolve() == (ROOT / folder / "__init__.py").resolve()


@pytest.mark.parametrize("cwd", ["checkout", "elsewhere"])
def test_python_imports_the_files_the_static_view_resolves(cwd, tmp_path):
    """From the repository root (pytest, ``python -m``, the stack's worker: the checkout's tuneops/ comes first) and
    from anywhere else (the installed tree), Python imports the very files a static tool resolves."""
    import json
    import subprocess
    import sys

    names = ["tuneops.errors", "tuneops.flows", "tuneops.tasks", "tuneops.monitoring", "tuneops.infra"]
    code = (f"import importlib, json; print(json.dumps({{n: importlib.import_module(n).__file__ for n in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT if cwd == "checkout" else tmp_path)
    assert done.returncode == 0, done.stderr
    imported = {n: Path(f).resolve() for n, f in json.loads(done.stdout).items()}
    assert imported == {n: resolve_module(n, static_path_entries()).resolve() for n in names}
