"""The MLflow pyfunc a registered classifier is: ``text`` in, ``label`` and ``confidence`` out.

It wraps :class:`tuneops.families.classification.predictor.Classifier`, so serving predicts exactly as evaluation
did.
Its inference runtime comes from the model config it is loaded with (:mod:`tuneops.serving`), and so does
``share_base`` (a process serving several models on one base loads the base's weights once).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from tuneops.serving.inputs import input_texts


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from tuneops.families.classification.predictor import Classifier
        from tuneops.serving.runtimes import model_config_runtime

        config = context.model_config or {}
        self.classifier = Classifier(context.artifacts["model"], runtime=model_config_runtime(config),
                                     batch_size=int(config.get("batch_size") or 128),
                                     share_base=bool(config.get("share_base")))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts = input_texts(model_input)
        out = self.classifier.predict(texts)
        return pd.DataFrame({"label": out.labels, "confidence": out.confidences})
