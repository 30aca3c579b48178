"""A language model's merged-vs-unmerged check (:mod:`tuneops.training.merge_check`): a model adapted on unlabelled
text answers no question, it scores texts, so the trained model with its adapter beside the base and its merged copy
must give every validation text the same mean token loss, within ``training.export_tolerance`` (the tolerance the
export check allows the aggregate loss); the largest difference is reported beside it. Both score through the
family's one scoring path, :class:`LanguageModelScorer` (the same fixed masks for an encoder)."""

from __future__ import annotations

from typing import Any

from tuneops.training.merge_check import MergeCheck


def compare(unmerged: Any, merged: Any, tokenizer: Any, settings: Any, texts: list[str], batch_size: int,
            tolerance: float) -> MergeCheck:
    """Each text's mean token loss under both models; the texts within ``tolerance`` of each other."""
    from tuneops.families.language_modeling.language_model import LanguageModelScorer

    scores = [LanguageModelScorer(model=model, tokenizer=tokenizer, settings=settings, batch_size=batch_size)
              .score(texts) for model in (unmerged, merged)]
    (sums_a, counts), (sums_b, _) = scores
    differences = [abs(a - b) / max(n, 1) for a, b, n in zip(sums_a, sums_b, counts, strict=True)]
    same = sum(d <= tolerance for d in differences)
    return MergeCheck("loss", len(texts), same, max_diff=max(differences, default=0.0), tolerance=tolerance)
