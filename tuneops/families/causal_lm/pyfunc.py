"""The MLflow pyfunc a registered causal LM is (also what a preference-tuned model registers as).

Its inference runtime comes from the model config it is loaded with (:mod:`tuneops.serving`), and so does
``share_base`` (a process serving several models on one base loads the base's weights once).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


class TextGeneratorModel(mlflow.pyfunc.PythonModel):
    """A registered causal LM (model.task: causal_lm): a ``prompt`` column in; ``response``, ``prompt_tokens``,
    ``response_tokens``, ``finish_reason`` ('stop' or 'length': cut off) and ``latency_ms`` out.

    It wraps :class:`tuneops.families.causal_lm.generation.Generator`, so serving renders and generates exactly as
    evaluation did.
    """

    def load_context(self, context: Any) -> None:
        from tuneops.families.causal_lm.generation import Generator
        from tuneops.serving.runtimes import model_config_runtime

        config = context.model_config or {}
        self.generator = Generator(context.artifacts["model"], runtime=model_config_runtime(config),
                                   batch_size=int(config.get("batch_size") or 32),
                                   share_base=bool(config.get("share_base")))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One response per prompt; a prompt is text, or a conversation as JSON text ``[{"role", "content"}]``."""
        from tuneops.families.causal_lm.generation import as_prompt

        if isinstance(model_input, pd.DataFrame):
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            prompts = model_input[column].tolist()
        else:
            prompts = list(model_input)
        from dataclasses import asdict

        from tuneops.families.causal_lm.generation import GENERATED_COLUMNS

        details = self.generator.generate_details([as_prompt(p) for p in prompts])
        return pd.DataFrame([asdict(g) for g in details], columns=GENERATED_COLUMNS)
