"""Serving: batch scoring and the prediction log, the HTTP server, inference runtimes and their check.

Each family's MLflow pyfunc lives in its folder (``tuneops/families/<name>/pyfunc.py``). Versions registered
before the pyfuncs moved there hold cloudpickles that name ``tuneops.serving.TextClassifierModel`` (and the
generator and scorer): those names resolve here, lazily, so that importing this package stays cheap.

Every pyfunc takes its inference runtime (``tuneops/serving/runtimes/``) from the model config it is loaded with:
``mlflow.pyfunc.load_model(uri, model_config={"runtime": "int8"})``; fp32 when none is given, so
``mlflow models serve`` serves fp32 unchanged. The pyfunc does not check a runtime's agreement with fp32 (it
does not know which registered version it is): tuneops' loading path does that first
(:mod:`tuneops.serving.runtime_check`).
"""

from __future__ import annotations

import importlib
from typing import Any

_REGISTERED_BEFORE_0_2 = {
    "TextClassifierModel": "tuneops.families.classification.pyfunc",
    "TextGeneratorModel": "tuneops.families.causal_lm.pyfunc",
    "TextScorerModel": "tuneops.families.language_modeling.pyfunc",
    "input_texts": "tuneops.serving.inputs",
}


def __getattr__(name: str) -> Any:
    if name in _REGISTERED_BEFORE_0_2:
        return getattr(importlib.import_module(_REGISTERED_BEFORE_0_2[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
