"""The registration parts that differ for a causal LM (model.task: causal_lm): the pyfunc and the model card.

Everything else (provenance tags, one version per run, aliases, promotion) is tasks/registry.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tuneops.config import TuneopsConfig
from tuneops.splits import SplitResult
from tuneops.training import TrainResult


def generator_model() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The pyfunc, an input example and an output example (for the signature)."""
    from tuneops.serving import TextGeneratorModel

    return (TextGeneratorModel(), pd.DataFrame({"prompt": ["Which intent: I still have not received my new card"]}),
            pd.DataFrame({"response": ["card arrival"]}))


def generator_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
                   trained: TrainResult) -> str:
    """A markdown model card for an instruction-tuned causal LM."""
    d = cfg.data
    columns = (f"conversations in `{d.messages_column}`" if d.messages_column
               else f"prompts in `{d.prompt_column}`, responses in `{d.response_column}`")
    ppl = f", perplexity {metrics['perplexity']:.3f}" if "perplexity" in metrics else ""
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        "Answer instructions like those in the training data. Input: a DataFrame with a `prompt` column (text, or "
        "a list of {role, content} messages); output: a `response` column, greedy, at most "
        f"{cfg.model.max_new_tokens} new tokens.", "",
        "## Data",
        f"- source `{d.path}` ({columns}), fingerprint `{tags['tuneops.data.fingerprint']}`",
        "- split (hash-based on the prompt, stable as data grows): " + ", ".join(
            f"{n} {splits.sizes[n]} rows (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        "", "## Training",
        f"- base model `{cfg.model.base}`, method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, "
        f"lr {cfg.training.learning_rate:g}, max length {cfg.model.max_length} tokens; loss on response tokens only",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"ROUGE-L {metrics['rouge_l']:.4f}, exact match {metrics['exact_match']:.4f}{ppl}; per-example scores "
        "and the lowest-scoring generations are in the run's `evaluation/` folder.", "",
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Generates free text: it can be fluent and wrong. Exact match and ROUGE-L measure overlap with one "
        "reference, not truth or safety.",
        f"- Prompt plus response are limited to {cfg.model.max_length} tokens; longer prompts lose their start.",
        "- Quality was measured on held-out rows of the same source; other channels or periods may differ.",
    ])
