"""The layering rule, read from the code's own imports (``ast``), and the family boundary.

Layers, lowest first: the library (``tuneops/`` modules: pure functions, no Prefect), ``tuneops.monitoring``
(drift, alerts, retrain decisions), ``tuneops.tasks`` (thin Prefect tasks), ``tuneops.flows`` and
``tuneops.infra``, and the CLI (``tuneops.cli``) on top. A module imports only from its own layer or the
ones below; flows never import each other; nothing imports the CLI; there is no import circle. Every
import counts, also one inside a function and one under ``if TYPE_CHECKING:`` (an annotation is a dependency
too: types that two modules share live in a leaf module both import, e.g. tuneops.families.schema).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = {"tuneops": ROOT / "tuneops", "tuneops.monitoring": ROOT / "monitoring", "tuneops.tasks": ROOT / "tasks",
            "tuneops.flows": ROOT / "flows", "tuneops.infra": ROOT / "infra"}
RANK = {"library": 0, "tuneops.monitoring": 1, "tuneops.tasks": 2, "tuneops.flows": 3, "tuneops.infra": 3, "cli": 4}
# The Prefect Secret block that may hold an alert channel's URL: the one Prefect lookup monitoring makes.
PREFECT_IN_MONITORING = {"tuneops.monitoring.alerts"}
FAMILY_CODE = ("tuneops.families", "tuneops.config")  # where model.task may be branched on


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "tuneops" and any(name.startswith(p) for p in PACKAGES if p != "tuneops"):
                continue
            found[name] = path
    return found


MODULES = modules()


def layer(module: str) -> str:
    if module == "tuneops.cli":
        return "cli"
    return next((p for p in ("tuneops.monitoring", "tuneops.tasks", "tuneops.flows", "tuneops.infra")
                 if module == p or module.startswith(p + ".")), "library")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def imports(module: str, runtime: bool = False) -> set[str]:
    """Every module of the project that ``module`` imports, at module level, inside a function or for annotations
    only (under ``if TYPE_CHECKING:``); with ``runtime``, only those imported when the code runs."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in _runtime_nodes(tree) if runtime else ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def external(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    out = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    out |= {n.module.split(".")[0] for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return out


GRAPH = {m: imports(m) for m in MODULES}
RUNTIME_GRAPH = {m: imports(m, runtime=True) for m in MODULES}


def test_the_walk_sees_the_project():
    assert {"tuneops.config", "tuneops.flows.train_model", "tuneops.tasks.finetune", "tuneops.monitoring.drift",
            "tuneops.infra.stack", "tuneops.cli", "tuneops.families.causal_lm"} <= set(MODULES)
    assert "tuneops.tasks.finetune" in GRAPH["tuneops.flows.train_model"]
    assert "tuneops.config" in GRAPH["tuneops.training.engine"]
    assert "tuneops.families" in GRAPH["tuneops.training.trainer"]
    assert "tuneops.config" not in RUNTIME_GRAPH["tuneops.training.trainer"]  # its annotations only (if TYPE_CHECKING)
    assert "tuneops.config" in GRAPH["tuneops.training.trainer"]  # which count in every check below


def test_no_import_points_up_and_flows_do_not_import_flows():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if target == "tuneops.cli":
                wrong.append(f"{module} imports the CLI")
            elif RANK[layer(target)] > RANK[layer(module)] and not (target == "tuneops" or module == "tuneops"):
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
            elif layer(module) == layer(target) == "tuneops.flows":
                wrong.append(f"flow {module} imports flow {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(GRAPH[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def reach(module: str) -> set[str]:
    """Every module ``module`` imports, directly or through others."""
    seen, stack = set(), [module]
    while stack:
        for target in GRAPH[stack.pop()] - seen:
            seen.add(target)
            stack.append(target)
    return seen


def test_the_config_and_the_families_share_a_leaf():
    """What the config and the families share (the section base, FamilyConfig, the registry) is a leaf module;
    the config does not reach a family's code, and a family's config.py (what it adds to the schema) reaches
    neither the config nor a family's code, only that leaf, other families' config.py and modules below."""
    from tuneops.families import FAMILIES

    assert GRAPH["tuneops.families.schema"] == set()
    family_code = {"tuneops.families", *(f"tuneops.families.{name}" for name in FAMILIES)}
    assert not family_code & reach("tuneops.config"), family_code & reach("tuneops.config")
    configs = [m for m in MODULES if m.startswith("tuneops.families.") and m.endswith(".config")]
    assert len(configs) == len(FAMILIES)
    for module in configs:
        assert not (family_code | {"tuneops.config"}) & reach(module), module


def test_library_and_monitoring_do_not_use_prefect():
    using = [m for m in MODULES if "prefect" in external(m)
             and (layer(m) == "library" or (layer(m) == "tuneops.monitoring" and m not in PREFECT_IN_MONITORING))]
    assert not using, f"Prefect imported below tasks/: {using}"
    assert "prefect" not in external("tuneops.monitoring.drift")


def _reads_model_task(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "task" and isinstance(node.value, ast.Attribute) \
        and node.value.attr == "model"


def family_branches(tree: ast.AST, names: set[str]) -> list[ast.AST]:
    """Comparisons, matches and lookups on ``<x>.model.task`` or on a family's name."""
    found = []
    for node in ast.walk(tree):
        operands = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Match):
            operands = [node.subject]
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        if any(_reads_model_task(o) or (isinstance(o, ast.Constant) and o.value in names) for o in operands):
            found.append(node)
    return found


def test_nothing_outside_the_families_branches_on_the_task_family():
    from tuneops.families import FAMILIES

    found = [f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
             for module, path in MODULES.items() if not module.startswith(FAMILY_CODE)
             for node in family_branches(ast.parse(path.read_text()), set(FAMILIES))]
    assert not found, "branch on model.task outside tuneops/families/:\n" + "\n".join(found)


def test_the_branch_check_catches_a_branch():
    """The check above is only worth something if it sees the patterns it forbids (and not a plain read)."""
    tree = ast.parse("if cfg.model.task == 'x':\n    pass\nif kind == 'causal_lm':\n    pass\n"
                     "y = TABLE[cfg.model.task]\nmatch cfg.model.task:\n    case _:\n        pass\n"
                     "tags = {'task': cfg.model.task}")
    assert len(family_branches(tree, {"causal_lm", "classification"})) == 4


@pytest.mark.parametrize("module", ["tuneops.families.classification.pyfunc", "tuneops.families.causal_lm.pyfunc",
                                    "tuneops.families.classification.predictor",
                                    "tuneops.families.causal_lm.generation", "tuneops.training.worker",
                                    "tuneops.training.trainer"])
def test_prediction_and_training_code_loads_without_prefect(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "import tuneops.families, tuneops.config; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_flow_modules_hold_flows_only():
    """Tasks live in tasks/ (thin wrappers over library functions); a flow module defines flows and their results."""
    found = []
    for module, path in MODULES.items():
        if layer(module) != "tuneops.flows":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
                if names & {"task", "prefect.task"}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: task {node.name}")
    assert not found, "\n".join(found)
