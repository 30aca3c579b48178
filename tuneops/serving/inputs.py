"""What a registered pyfunc is sent: the texts of a request, whatever shape MLflow hands them in."""

from __future__ import annotations

from typing import Any

import pandas as pd


def input_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc request: the ``text`` column of a frame (else its first column), or a list."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].astype(str).tolist()
    return [str(t) for t in model_input]
