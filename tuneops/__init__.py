"""tuneops: workflow-orchestrated fine-tuning of language models on company data.

The library (this package's modules) has no Prefect in it; ``tuneops.tasks`` (tasks/) wraps it in
Prefect tasks, ``tuneops.flows`` (flows/) chains them, ``tuneops.monitoring`` (monitoring/) holds the
drift, alert and retraining logic, ``tuneops.infra`` (infra/) the local stack, and ``tuneops.cli`` is the
one command. docs/architecture.md draws the layers.
"""

from tuneops import console

# Progress lines (training steps, the memory preflight, launches) are INFO; Prefect forwards them to the run's log.
# The libraries below tuneops are quiet from here on unless TUNEOPS_LOG_LEVEL is DEBUG (tuneops.console).
console.configure(strict=False)
