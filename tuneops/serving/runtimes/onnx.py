"""onnx: the merged classifier exported once with ``torch.onnx.export`` and run by ONNX Runtime on the CPU.

The graph is written beside the model's files (``tuneops_onnx/model.onnx``), so a second load of the same
folder reuses it. Classifiers only: exporting a causal LM's generation loop (past key values) is not done here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneops.serving.runtimes import Forward, Runtime, register

ONNX_DIR = "tuneops_onnx"


def unavailable() -> str | None:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def export(model: Any, tokenizer: Any, path: Path) -> None:
    """Write the model's graph with dynamic batch and sequence axes (the legacy TorchScript exporter)."""
    import warnings

    import torch

    sample = dict(tokenizer(["an example text", "another, longer example text"], padding=True,
                            return_tensors="pt"))
    names = list(sample)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).logits

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model).eval(), tuple(sample[n] for n in names), str(partial), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    partial.replace(path)  # a crash mid-export never leaves a graph a later load would trust


def classifier(model: Any, tokenizer: Any, model_dir: Path) -> Forward:
    import onnxruntime as ort
    import torch

    from tuneops.errors import TuneopsError

    path = Path(model_dir) / ONNX_DIR / "model.onnx"
    if not path.is_file():
        try:
            export(model, tokenizer, path)
        except Exception as exc:  # an architecture or adapter the exporter cannot trace
            raise TuneopsError(f"runtime onnx cannot export this model ({type(exc).__name__}: {str(exc)[:300]}); "
                               "use serving.runtime: fp32 or int8") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def forward(enc: dict[str, Any]) -> Any:
        feeds = {n: enc[n].numpy() for n in wanted}
        return torch.from_numpy(session.run(["logits"], feeds)[0])

    return forward


register(Runtime(name="onnx", summary="ONNX Runtime over the exported classifier graph", classifier=classifier,
                 unavailable=unavailable, unsupported="ONNX is not supported for causal_lm (a generation loop with "
                 "past key values is not exported); use fp32, int8 or bf16", merges=True))
