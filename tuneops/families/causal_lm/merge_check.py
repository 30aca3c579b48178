"""A generator's merged-vs-unmerged check (:mod:`tuneops.training.merge_check`): the trained model with its adapter
beside the base and its merged copy must give the same greedy answer, character for character, to every sampled
validation prompt (``serving.runtime_check_prompts`` of them, seeded, the cap the runtime agreement check uses:
generation is slow). Both answer through the family's one generation path, :class:`Generator`. The preference
family, which registers a causal LM, checks the same way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tuneops.training.merge_check import MergeCheck

log = logging.getLogger("tuneops.families.causal_lm.merge_check")


def compare(unmerged: Any, merged: Any, tokenizer: Any, settings: Any, prompts: list, batch_size: int) -> MergeCheck:
    """Greedy answers of both models to the prompts; the prompts answered alike."""
    from tuneops.families.causal_lm.generation import Generator

    answers = [Generator(Path("."), batch_size, model=model, tokenizer=tokenizer, settings=settings).generate(prompts)
               for model in (unmerged, merged)]
    differ = [i for i, (a, b) in enumerate(zip(*answers, strict=True)) if a != b]
    if differ:
        i = differ[0]
        log.warning("merged and unmerged answer %d of %d validation prompts differently, e.g. %r: unmerged %r, "
                    "merged %r", len(differ), len(prompts), str(prompts[i])[:200], answers[0][i][:200],
                    answers[1][i][:200])
    return MergeCheck("answer", len(prompts), len(prompts) - len(differ))


def distinct(prompts: list) -> list:
    """Each prompt once, in order (preference pairs repeat their prompt)."""
    seen: dict[str, Any] = {}
    for prompt in prompts:
        seen.setdefault(prompt if isinstance(prompt, str) else repr(prompt), prompt)
    return list(seen.values())
