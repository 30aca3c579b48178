"""tuneops: workflow-orchestrated fine-tuning of language models on company data.

The library (this package's modules) has no Prefect in it; ``tuneops.tasks`` (tasks/) wraps it in
Prefect tasks, ``tuneops.flows`` (flows/) chains them, ``tuneops.monitoring`` (monitoring/) holds the
drift, alert and retraining logic, ``tuneops.infra`` (infra/) the local stack, and ``tuneops.cli`` is the
one command. docs/architecture.md draws the layers.
"""


def _look_in_the_installed_tree(path: list[str]) -> None:
    """flows/, tasks/, monitoring/ and infra/ sit at the repository root, not in this folder; installed, they are
    tuneops.flows, ... (pyproject.toml). `make install` installs in setuptools' strict editable mode: a tree of links
    under build/ holds tuneops/ with the four inside, on a plain path entry that static tools read. Imported from
    the checkout itself (its root comes first on sys.path under pytest, `python -m` from the root and the stack's
    worker), this package is the folder beside them: its subpackages are then also looked up in that tree."""
    import os
    import sys

    if os.path.isdir(os.path.join(path[0], "tasks")):
        return  # installed: the four are inside
    for entry in sys.path:
        installed = os.path.join(os.path.abspath(entry or os.curdir), __name__)
        if installed not in path and os.path.isfile(os.path.join(installed, "tasks", "__init__.py")):
            path.append(installed)
            return


_look_in_the_installed_tree(__path__)

from tuneops import console  # noqa: E402 - once the package's path is complete

# Progress lines (training steps, the memory preflight, launches) are INFO; Prefect forwards them to the run's log.
# The libraries below tuneops are quiet from here on unless TUNEOPS_LOG_LEVEL is DEBUG (tuneops.console).
console.configure(strict=False)
