"""A classifier's merged-vs-unmerged check (:mod:`tuneops.training.merge_check`): the trained model with its
adapter beside the base and its merged copy must give the same label on every validation row; the largest
absolute logit difference on any row is reported beside it."""

from __future__ import annotations

from typing import Any

from tuneops.training.merge_check import MergeCheck


def compare(unmerged: Any, merged: Any, tokenizer: Any, texts: list[str], max_length: int,
            batch_size: int) -> MergeCheck:
    """Both models' logits on the same batches (length-sorted, padded as the classifier predicts): the rows with the
    same top label, and the largest absolute difference of any logit."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    device = next(unmerged.parameters()).device
    unmerged.eval(), merged.eval()
    same, largest = 0, 0.0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            a, b = unmerged(**enc).logits.float(), merged(**enc).logits.float()
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            largest = max(largest, float((a - b).abs().max()))
    return MergeCheck("label", len(texts), same, max_diff=largest)
