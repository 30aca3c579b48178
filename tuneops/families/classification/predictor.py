"""Run predictions with a saved classifier (the folder is loaded by tuneops.training.model_loading, whatever its
format: merged weights, a frozen base plus an adapter, or an adapter-only version pinned to its base).

:class:`Classifier` is the one prediction path: evaluation, the registered MLflow pyfunc,
`tuneops predict` and batch scoring all call it, so what was evaluated is what serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Predictions:
    labels: list[str]
    confidences: list[float]


class Classifier:
    """A saved sequence classifier (model + tokenizer + label map in one folder), run by an inference runtime
    (``tuneops/serving/runtimes/``: fp32 unless another is named)."""

    def __init__(self, model_dir: str | Path, max_length: int | None = None, batch_size: int = 128,
                 runtime: str = "fp32", merge: bool | None = None, share_base: bool = False):
        """``merge``: fold a mergeable adapter into the weights in memory (None: when the runtime needs plain
        weights, its ``merges``); ``share_base``: share the base's frozen weights with the other unmerged models
        on the same base in this process (:func:`tuneops.training.model_loading.load_saved_model`)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import tuneops.families.classification.pooling  # noqa: F401 - registers the mean-pooled model type with the Auto classes
        from tuneops.serving import runtimes
        from tuneops.training.model_loading import load_saved_model

        chosen = runtimes.usable(runtime, "classifier", for_generation=False)

        self.torch = torch
        model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # A runtime that needs plain weights says so (``Runtime.merges``; without that field: all but the reference).
        self.merged = bool(getattr(chosen, "merges", chosen.name != runtimes.REFERENCE)) if merge is None else merge
        self.model = load_saved_model(model_dir, AutoModelForSequenceClassification, merge=self.merged,
                                      share_base=share_base)
        config = self.model.config
        self.id2label = {int(k): v for k, v in config.id2label.items()}
        self.max_length = max_length or getattr(config, "tuneops_max_length", 128)
        self.batch_size = batch_size
        self.runtime = chosen.name
        self.forward = chosen.classifier(self.model, self.tokenizer, model_dir)

    def predict(self, texts: list[str]) -> Predictions:
        """Labels and softmax confidences; batches are length-sorted to keep padding small."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        labels: list[Any] = [None] * len(texts)
        conf: list[float] = [0.0] * len(texts)
        with self.torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt")
                probs = self.forward(dict(enc)).float().softmax(-1)
                best, arg = probs.max(-1)
                for j, i in enumerate(idx):
                    labels[i] = self.id2label[int(arg[j])]
                    conf[i] = float(best[j])
        return Predictions(labels, conf)
