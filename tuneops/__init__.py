"""tuneops: workflow-orchestrated fine-tuning of language models on company data.

The library (this package's modules) has no Prefect in it; ``tuneops.tasks`` (tasks/) wraps it in
Prefect tasks, ``tuneops.flows`` (flows/) chains them, ``tuneops.monitoring`` (monitoring/) holds the
drift, alert and retraining logic, ``tuneops.infra`` (infra/) the local stack, and ``tuneops.cli`` is the
one command. README.md, "Architecture", draws the layers.
"""

import os as _os
import sys as _sys

# flows/, tasks/, monitoring/ and infra/ sit at the repository root, not in this folder; installed, they are
# tuneops.flows, ... (pyproject.toml). `make install` installs in setuptools' strict editable mode: a tree of links
# under build/ holds tuneops/ with the four inside, on a plain path entry that static tools read. Imported from the
# checkout itself (its root comes first on sys.path under pytest, `python -m` from the root and the stack's worker),
# this package is the folder beside them: its subpackages are then also looked up in that installed tree.
if not _os.path.isdir(_os.path.join(__path__[0], "tasks")):
    for _entry in _sys.path:
        _installed = _os.path.join(_os.path.abspath(_entry or _os.curdir), __name__)
        if _os.path.isfile(_os.path.join(_installed, "tasks", "__init__.py")) and _installed not in __path__:
            __path__.append(_installed)
            break

from tuneops import console  # noqa: E402 - after the package path is complete

# Progress lines (training steps, the memory preflight, launches) are INFO; Prefect forwards them to the run's log.
# The libraries below tuneops are quiet from here on unless TUNEOPS_LOG_LEVEL is DEBUG (tuneops.console).
console.configure(strict=False)
