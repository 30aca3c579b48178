"""Preference pairs from a supervised task and its champion: what the champion gets wrong, against what is right.

For each prompt of the supervised task's TRAINING split (never its validation or test rows, which stay
clean for scoring the task), the chosen answer is the reference and the rejected one is

- the champion's own greedy answer where that answer is wrong or malformed (on-policy pairs: the
  mistakes this very model makes), or
- where the champion is right, a plausible near miss of the reference: for a JSON list of labels one
  label dropped, one added, one swapped for another label of the task, or the JSON cut before its
  closing bracket (free-text and single-label tasks get on-policy pairs only).

Each near miss is drawn from a generator seeded by the prompt, so the same data gives the same pairs
whatever the row order. ``tuneops pairs`` writes them (JSONL) under $TUNEOPS_HOME/pairs by default.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig

NEAR_MISSES = ("drop", "add", "swap", "broken_json")


@dataclass
class PairsResult:
    """Where the pairs are and how they were made."""

    path: str
    rows: int
    sources: dict[str, int]
    champion: str
    training_prompts: int


def default_output(task: TuneopsConfig) -> Path:
    from tuneops import settings

    return settings.home() / "pairs" / f"{task.registry.model_name}.jsonl"


def near_miss(reference: list[str], labels: list[str], rng: random.Random) -> tuple[str, str]:
    """(kind, answer): a wrong JSON answer close to the reference (``labels``: the task's label vocabulary)."""
    others = [label for label in labels if label not in reference]
    kinds = [k for k in NEAR_MISSES if (k != "drop" or reference) and (k not in ("add", "swap") or others)
             and (k != "swap" or reference)]
    kind = rng.choice(kinds)
    if kind == "drop":
        dropped = rng.randrange(len(reference))
        return kind, json.dumps([label for i, label in enumerate(reference) if i != dropped])
    if kind == "add":
        changed = list(reference)
        changed.insert(rng.randrange(len(changed) + 1), rng.choice(others))
        return kind, json.dumps(changed)
    if kind == "swap":
        changed = list(reference)
        changed[rng.randrange(len(changed))] = rng.choice(others)
        return kind, json.dumps(changed)
    return kind, json.dumps(reference)[:-1]  # broken JSON: the closing bracket is missing


def make_pairs(prompts: list[str], references: list[str], answers: list[str], response_format: str,
               seed: int = 0) -> pd.DataFrame:
    """Pairs (prompt, chosen, rejected, source) from the references and the champion's answers to the same prompts."""
    from tuneops.generation import exact_match, parse_label_list

    json_lists = response_format == "json_list"
    labels = sorted({label for r in references for label in (parse_label_list(r) or [])}) if json_lists else []
    rows = []
    for prompt, reference, answer in zip(prompts, references, answers, strict=True):
        if json_lists:
            want = parse_label_list(reference) or []
            got = parse_label_list(answer)
            right = got is not None and set(got) == set(want)
        else:
            want, right = [], bool(exact_match(answer, reference))
        if not right and answer.strip() and answer.strip() != reference.strip():
            rows.append((prompt, reference, answer, "on_policy"))
        elif json_lists:
            kind, rejected = near_miss(want, labels, random.Random(f"{seed}:{prompt}"))
            rows.append((prompt, reference, rejected, f"near_miss:{kind}"))
    return pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", "source"])


def build_pairs(task: TuneopsConfig, champion: str | None = None, output: str | None = None,
                seed: int = 0) -> PairsResult:
    """Generate with the champion on the task's training prompts, make the pairs, write them as JSONL."""
    from tuneops import generation
    from tuneops.bases import resolve
    from tuneops.data import select_subset
    from tuneops.errors import ConfigError
    from tuneops.families.causal_lm import prepare_causal
    from tuneops.splits import assign_splits
    from tuneops.storage import read_dataset

    if not (task.data.prompt_column and task.data.response_column):
        raise ConfigError(f"pairs are built from an instruction-tuning config with data.prompt_column and "
                          f"data.response_column (e.g. configs/nlupp_intents_llm.yaml); {task.registry.model_name}'s "
                          "config has none")
    champion = champion or f"models:/{task.registry.model_name}@champion"
    df = prepare_causal(select_subset(read_dataset(task.data.path), task.data), task)
    train = df[assign_splits(df, task.split_data(), task.split) == "train"]
    prompts, references = generation.examples(train, task)
    answers = generation.Generator(resolve(champion), task.training.eval_batch_size).generate(prompts)
    pairs = make_pairs([str(p) for p in prompts], references, answers, task.model.response_format, seed)
    path = Path(output) if output else default_output(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_json(path, orient="records", lines=True, force_ascii=False)
    return PairsResult(str(path), len(pairs), pairs.source.value_counts().to_dict(), champion, len(prompts))
