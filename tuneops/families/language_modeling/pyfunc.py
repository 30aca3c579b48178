"""The MLflow pyfunc a language model adapted on unlabelled text is: a text scorer.

Its inference runtime comes from the model config it is loaded with (:mod:`tuneops.serving`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from tuneops.serving.inputs import input_texts


class TextScorerModel(mlflow.pyfunc.PythonModel):
    """A language model adapted on unlabelled text (model.task: language_modeling): a ``text`` column in; per text
    ``log_likelihood`` (mean over its scored tokens, nats), ``perplexity`` (its exp; for an encoder a
    pseudo-perplexity over masked tokens) and ``tokens`` (how many were scored) out. Low likelihood means the text
    is unlike the domain the model was adapted to.

    It wraps :class:`tuneops.families.language_modeling.language_model.LanguageModelScorer`, so serving scores exactly
    as evaluation did.
    """

    def load_context(self, context: Any) -> None:
        from tuneops.families.language_modeling.language_model import LanguageModelScorer
        from tuneops.serving.runtimes import REFERENCE, RuntimeRefused, model_config_runtime

        runtime = model_config_runtime(context.model_config)
        if runtime != REFERENCE:
            raise RuntimeRefused(f"runtime {runtime} is not supported for a language_modeling text scorer; use "
                                 f"serving.runtime: {REFERENCE}")
        self.scorer = LanguageModelScorer(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import math

        texts = input_texts(model_input)
        sums, counts = self.scorer.score(texts)
        means = [-s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]
        return pd.DataFrame({"log_likelihood": means, "perplexity": [math.exp(min(-m, 700.0)) for m in means],
                             "tokens": counts})
