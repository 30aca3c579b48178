"""Run predictions with a saved classifier (base models are resolved by tuneops.training.base_models).

:class:`Classifier` is the one prediction path: evaluation, the registered MLflow pyfunc,
`tuneops predict` and batch scoring all call it, so what was evaluated is what serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"  # PEFT-format adapter (every adapter method), with its resolved settings beside it
BASE_DIR = "base"  # the frozen base model, exported only for methods that cannot merge (prefix, prompt, ...)


def has_base_and_adapter(model_dir: Path) -> bool:
    """Whether an exported folder is a frozen base plus an adapter (a method that cannot merge)."""
    return (model_dir / ADAPTER_DIR).is_dir() and (model_dir / BASE_DIR).is_dir()


def load_base_and_adapter(model_dir: Path, model_class: Any) -> Any:
    """The exported base with its adapter put back by the method that trained it (named in tuneops_method.json)."""
    import json

    from tuneops import methods

    method = methods.get(json.loads((model_dir / ADAPTER_DIR / "tuneops_method.json").read_text())["method"])
    base = method.adapt_base(model_class.from_pretrained(str(model_dir / BASE_DIR)))
    return method.load(base, model_dir / ADAPTER_DIR).eval()


@dataclass
class Predictions:
    labels: list[str]
    confidences: list[float]


class Classifier:
    """A saved sequence classifier (model + tokenizer + label map in one folder), run by an inference runtime
    (``tuneops/serving/runtimes/``: fp32 unless another is named)."""

    def __init__(self, model_dir: str | Path, max_length: int | None = None, batch_size: int = 128,
                 runtime: str = "fp32"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import tuneops.families.classification.pooling  # noqa: F401 - registers the mean-pooled model type with the Auto classes
        from tuneops.serving import runtimes

        chosen = runtimes.usable(runtime, "classifier", for_generation=False)

        self.torch = torch
        model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if has_base_and_adapter(model_dir):
            self.model = load_base_and_adapter(model_dir, AutoModelForSequenceClassification)
        else:
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
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
