"""int8: PyTorch dynamic quantisation of every ``nn.Linear`` (int8 weights, activations quantised per batch).

``torch.ao.quantization.quantize_dynamic`` keeps embeddings, layer norms and softmax in float32; the matmuls of
the linear layers run as int8 (FBGEMM on x86).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneops.serving.runtimes import Forward, Runtime, register


def quantise(model: Any) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8).eval()


def classifier(model: Any, tokenizer: Any, model_dir: Path) -> Forward:
    quantised = quantise(model)
    return lambda enc: quantised(**enc).logits


register(Runtime(name="int8", summary="PyTorch, dynamic int8 quantisation of the linear layers",
                 classifier=classifier, generator=lambda model: (quantise(model), "fp32"), merges=True))
