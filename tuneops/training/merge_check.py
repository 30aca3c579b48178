"""Merged equals unmerged, checked: the trained adapter model against a copy with the adapter merged into the base
weights, row by row on the validation split, at training time.

A method that can merge (LoRA and its variants, IA3; ``tuneops.methods.get(name).mergeable``, full fine-tuning
aside: it has nothing to merge) can be served two ways: fp32 does not merge, so a version that stores its adapter
is served as the base with the adapter beside it (what was trained); a runtime that needs plain weights
(``Runtime.merges``: bf16, int8, onnx) merges the adapter in at load time. The two should answer alike; users of
other tools report again and again that they do not (precision of the merge, a scaling applied twice, a head left
out). So the trainer compares them once, while the trained model is
in memory: the unmerged model is the trained PEFT model itself, the merged one ``copy.deepcopy(model)
.merge_and_unload()``, exactly what a merging runtime computes. Each family compares in its own terms, through
``TrainingPlan.compare_merged`` (its folder's ``merge_check.py``): a classifier the label of every row and the
largest logit difference, a generator the greedy answer to every sampled prompt, a language model the loss of
every text.

The result (:class:`MergeCheck`) is recorded on the run and the registered version as tags ``tuneops.merge_check.*``
and shown in the model card and the training summary. A failed check does not stop registration (the unmerged model
is what was trained, and fp32 does not merge) but a merging runtime refuses the version
(:func:`tuneops.serving.runtime_check.verified`). This module imports no torch, and no other tuneops module at
import time: the families, the trainer, serving and the CLI all read it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tuneops.training.merge_check")
PREFIX = "tuneops.merge_check"
KINDS = ("label", "answer", "loss")
SHARE = {"label": "same_label_share", "answer": "same_answer_share", "loss": "within_tolerance_share"}
"""The tag that holds the share of rows on which merged and unmerged agree, by kind."""
DIFF = {"label": "max_logit_diff", "loss": "max_loss_diff"}
"""The tag that holds the largest difference on any row, by kind (an answer is the same or not)."""
ROWS = {"label": "validation rows", "answer": "validation prompts", "loss": "validation texts"}


@dataclass
class MergeCheck:
    """One merged-vs-unmerged comparison (what the ``tuneops.merge_check.*`` tags hold).

    ``kind``: 'label' (a classifier: the same label on every row; ``max_diff`` is the largest absolute logit
    difference), 'answer' (a generator: the same greedy answer, character for character, to every prompt) or 'loss'
    (a language model: every text's mean token loss within ``tolerance``; ``max_diff`` the largest difference).
    It passes when every row agrees.
    """

    kind: str
    rows: int
    same: int
    max_diff: float | None = None
    tolerance: float | None = None
    method: str = ""
    seconds: float = 0.0

    @property
    def share(self) -> float:
        return self.same / self.rows if self.rows else 0.0

    @property
    def passed(self) -> bool:
        return self.rows > 0 and self.same == self.rows

    def tags(self) -> dict[str, str]:
        """Tags in write order, ``passed`` last (a version never holds a verdict without its figures)."""
        values = {"method": self.method, "kind": self.kind, "rows": str(self.rows),
                  SHARE[self.kind]: f"{self.share:.6f}"}
        if self.kind in DIFF and self.max_diff is not None:
            values[DIFF[self.kind]] = f"{self.max_diff:.6g}"
        if self.tolerance is not None:
            values["tolerance"] = f"{self.tolerance:g}"
        values |= {"seconds": f"{self.seconds:.3f}", "passed": str(self.passed)}
        return {f"{PREFIX}.{k}": v for k, v in values.items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> MergeCheck | None:
        """The check recorded in a version's (or run's) tags; None when there is none (a version registered before
        the check existed, full fine-tuning, a method that does not merge) or only part of one."""
        get = {k.removeprefix(f"{PREFIX}."): v for k, v in tags.items() if k.startswith(f"{PREFIX}.")}
        if "passed" not in get or get.get("kind") not in KINDS:
            return None
        kind, passed = get["kind"], get["passed"] == "True"
        try:
            rows = int(get["rows"])
            same = rows if passed else max(min(round(float(get[SHARE[kind]]) * rows), rows - 1), 0)
            return cls(kind, rows, same, float(get[DIFF[kind]]) if get.get(DIFF.get(kind, "")) else None,
                       float(get["tolerance"]) if get.get("tolerance") else None, get.get("method", ""),
                       float(get.get("seconds") or 0.0))
        except (KeyError, ValueError):
            return None

    def summary(self) -> str:
        """One line: what was compared, on how many rows, how far apart the two came."""
        what = {"label": "same label", "answer": "same greedy answer",
                "loss": f"loss within {self.tolerance:g}" if self.tolerance is not None else "same loss"}[self.kind]
        text = f"{what} on {self.share:.2%} of {self.rows} {ROWS[self.kind]}"
        if self.kind == "label" and self.max_diff is not None:
            text += f", largest logit difference {self.max_diff:.3g}"
        elif self.kind == "loss" and self.max_diff is not None:
            text += f", largest loss difference {self.max_diff:.3g}"
        return text + (f", method {self.method}" if self.method else "")

    def verdict(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'}: {self.summary()}"


def applies(method: str) -> bool:
    """Whether models trained with ``method`` have an adapter that a runtime may merge (not full fine-tuning, whose
    weights are plain already, nor prefix, prompt or bottleneck adapters, which cannot merge)."""
    from tuneops import methods

    return method != "full" and methods.get(method).mergeable


def merged_copy(model: Any) -> Any:
    """A copy of the trained adapter model with the adapter merged into the base weights (PEFT's
    ``merge_and_unload``, what a merging runtime does at load time); the trained model is left as it is."""
    return copy.deepcopy(model).merge_and_unload().eval()


def run(trained: Any, compare: Callable[[Any, Any], MergeCheck] | None, method: str) -> MergeCheck | None:
    """Compare the trained model with its merged copy through the family's ``compare``; None where the check does not
    apply (see :func:`applies`) or the family offers no comparison."""
    if compare is None or not applies(method):
        return None
    began = time.perf_counter()
    merged = merged_copy(trained)
    try:
        result = compare(trained, merged)
    finally:
        del merged
    result.method, result.seconds = method, time.perf_counter() - began
    (log.info if result.passed else log.warning)("merged vs unmerged %s in %.1f s", result.verdict(), result.seconds)
    return result


def sample(frame: Any, limit: int) -> Any:
    """The rows compared: every row up to ``limit``, else a seeded sample of ``limit`` (as the runtime check draws)."""
    return frame.sample(n=limit, random_state=0) if len(frame) > limit else frame


def merging_runtimes() -> str:
    """The names of the inference runtimes that merge an adapter into the weights (``Runtime.merges``)."""
    from tuneops.serving import runtimes

    return ", ".join(name for name, runtime in runtimes.RUNTIMES.items() if runtime.merges)


def consequence(passed: bool) -> str:
    """What the verdict means for serving."""
    if passed:
        return f"runtimes that merge the adapter ({merging_runtimes()}) may serve it"
    return (f"runtimes that merge the adapter ({merging_runtimes()}) refuse it; serving.runtime: fp32 (which does "
            "not merge) serves it")


def card_lines(tags: dict[str, str]) -> list[str]:
    """The model card's section on the check (nothing when the version has none)."""
    found = MergeCheck.from_tags(tags)
    if found is None:
        return []
    return ["## Merged vs unmerged",
            f"The trained model with its adapter beside the base and a copy with the adapter merged into the base "
            f"weights, compared on the validation split: {found.verdict()}; {consequence(found.passed)}.", ""]
