"""The MLflow pyfunc that a registered tuneops model is.

It wraps :class:`tuneops.models.Classifier`, so serving predicts exactly as evaluation did.
Input: a DataFrame with a ``text`` column (or a single column of texts). Output: one row per
text with ``label`` and ``confidence``.

Every pyfunc takes its inference runtime (``tuneops/runtimes/``) from the model config it is loaded with:
``mlflow.pyfunc.load_model(uri, model_config={"runtime": "int8"})``; fp32 when none is given, so
``mlflow models serve`` serves fp32 unchanged. The pyfunc does not check a runtime's agreement with fp32 (it
does not know which registered version it is): tuneops' loading path does that first (:mod:`tuneops.runtime_check`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


def input_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc request: the ``text`` column of a frame (else its first column), or a list."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].astype(str).tolist()
    return [str(t) for t in model_input]


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from tuneops.models import Classifier
        from tuneops.runtimes import model_config_runtime

        config = context.model_config or {}
        self.classifier = Classifier(context.artifacts["model"], runtime=model_config_runtime(config),
                                     batch_size=int(config.get("batch_size") or 128))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts = input_texts(model_input)
        out = self.classifier.predict(texts)
        return pd.DataFrame({"label": out.labels, "confidence": out.confidences})


class TextGeneratorModel(mlflow.pyfunc.PythonModel):
    """A registered causal LM (model.task: causal_lm): a ``prompt`` column in; ``response``, ``prompt_tokens``,
    ``response_tokens``, ``finish_reason`` ('stop' or 'length': cut off) and ``latency_ms`` out.

    It wraps :class:`tuneops.generation.Generator`, so serving renders and generates exactly as evaluation did.
    """

    def load_context(self, context: Any) -> None:
        from tuneops.generation import Generator
        from tuneops.runtimes import model_config_runtime

        config = context.model_config or {}
        self.generator = Generator(context.artifacts["model"], runtime=model_config_runtime(config),
                                   batch_size=int(config.get("batch_size") or 32))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One response per prompt; a prompt is text, or a conversation as JSON text ``[{"role", "content"}]``."""
        from tuneops.generation import as_prompt

        if isinstance(model_input, pd.DataFrame):
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            prompts = model_input[column].tolist()
        else:
            prompts = list(model_input)
        from dataclasses import asdict

        from tuneops.generation import GENERATED_COLUMNS

        details = self.generator.generate_details([as_prompt(p) for p in prompts])
        return pd.DataFrame([asdict(g) for g in details], columns=GENERATED_COLUMNS)


class TextScorerModel(mlflow.pyfunc.PythonModel):
    """A language model adapted on unlabelled text (model.task: language_modeling): a ``text`` column in; per text
    ``log_likelihood`` (mean over its scored tokens, nats), ``perplexity`` (its exp; for an encoder a
    pseudo-perplexity over masked tokens) and ``tokens`` (how many were scored) out. Low likelihood means the text
    is unlike the domain the model was adapted to.

    It wraps :class:`tuneops.language_model.LanguageModelScorer`, so serving scores exactly as evaluation did.
    """

    def load_context(self, context: Any) -> None:
        from tuneops.language_model import LanguageModelScorer
        from tuneops.runtimes import REFERENCE, RuntimeRefused, model_config_runtime

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
