"""Preference pairs from a supervised task and its champion: what the champion gets wrong, against what is right.

For each prompt of the supervised task's TRAINING split (never its validation or test rows, which stay
clean for scoring the task), the chosen answer is the reference and the rejected one is

- the champion's own greedy answer where that answer is wrong or malformed (on-policy pairs: the
  mistakes this very model makes), or
- where the champion is right, a plausible near miss of the reference: for a JSON list of labels one
  label dropped, one added, one repeated, one swapped for another label of the task, or the JSON cut
  before its closing bracket (free-text and single-label tasks get on-policy pairs only).

The near misses balance the pairs by length. A champion that under-predicts gives mostly on-policy
answers with fewer labels than the reference; pairs that only ever reject the shorter answer teach DPO
that a list should not end (measured: the tuned model repeated labels until its token budget ran out).
So the near misses lean to the longer kinds (``add``, ``repeat``) by as much as the on-policy answers
lean to the shorter ones, until as many rejected answers name more labels than the reference as fewer.

Each near miss is drawn from a generator seeded by the prompt, so the same data gives the same pairs
whatever the row order. ``tuneops pairs`` writes them (JSONL) under $TUNEOPS_HOME/pairs by default.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig

# Near misses by how many labels they name against the reference.
LONGER, SHORTER, SAME = ("add", "repeat"), ("drop",), ("swap", "broken_json")
NEAR_MISSES = (*SHORTER, *LONGER, *SAME)
SAME_SHARE = 0.4  # share of near misses naming as many labels as the reference (swap, broken JSON)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class PairsResult:
    """Where the pairs are and how they were made."""

    path: str
    rows: int
    sources: dict[str, int]
    champion: str
    training_prompts: int
    lengths: dict[str, int]  # rejected answers naming more / fewer / as many labels as the chosen one


def default_output(task: TuneopsConfig) -> Path:
    from tuneops import settings

    return settings.home() / "pairs" / f"{task.registry.model_name}.jsonl"


def length_sign(answer: str, reference: list[str]) -> int:
    """+1 if an answer names more labels than the reference, -1 if fewer, 0 if as many (malformed answers included:
    their quoted strings are counted)."""
    named = len(_QUOTED.findall(str(answer)))
    return (named > len(reference)) - (named < len(reference))


def near_miss(reference: list[str], labels: list[str], rng: random.Random,
              longer: float = (1 - SAME_SHARE) / 2, shorter: float = (1 - SAME_SHARE) / 2) -> tuple[str, str]:
    """(kind, answer): a wrong JSON answer close to the reference (``labels``: the task's label vocabulary).

    ``longer`` / ``shorter``: the chances that it names more labels than the reference (add, repeat) or fewer
    (drop); the rest names as many (swap, broken JSON). A direction with no possible kind for this reference
    falls to the others.
    """
    others = [label for label in labels if label not in reference]
    possible = {"drop": bool(reference), "add": bool(others), "repeat": bool(reference),
                "swap": bool(reference and others), "broken_json": True}
    pools = [[k for k in kinds if possible[k]] for kinds in (LONGER, SHORTER, SAME)]
    weights = [w if pool else 0.0 for w, pool in zip((longer, shorter, 1 - longer - shorter), pools, strict=True)]
    if not any(weights):  # e.g. only longer ones wanted, and none possible: any possible kind
        weights = [float(bool(pool)) for pool in pools]
    pool = rng.choices(pools, weights=weights)[0]
    kind = rng.choice(pool)
    if kind == "drop":
        dropped = rng.randrange(len(reference))
        return kind, json.dumps([label for i, label in enumerate(reference) if i != dropped])
    if kind == "add":
        changed = list(reference)
        changed.insert(rng.randrange(len(changed) + 1), rng.choice(others))
        return kind, json.dumps(changed)
    if kind == "repeat":  # the same set, one label named twice: how a list that does not end begins
        return kind, json.dumps([*reference, rng.choice(reference)])
    if kind == "swap":
        changed = list(reference)
        changed[rng.randrange(len(changed))] = rng.choice(others)
        return kind, json.dumps(changed)
    return kind, json.dumps(reference)[:-1]  # broken JSON: the closing bracket is missing


def length_mix(on_policy_signs: list[int], near_misses: int) -> tuple[float, float]:
    """(longer, shorter): the chances of a longer and a shorter near miss that make the rejected answers longer
    and shorter than the reference equally many, giving up near misses of the same length where it must."""
    lean = sum(on_policy_signs) / near_misses if near_misses else 0.0  # > 0: the on-policy answers lean longer
    directed = min(max(1 - SAME_SHARE, abs(lean)), 1.0)
    longer = min(max((directed - lean) / 2, 0.0), directed)
    return longer, directed - longer


def make_pairs(prompts: list[str], references: list[str], answers: list[str], response_format: str,
               seed: int = 0) -> pd.DataFrame:
    """Pairs (prompt, chosen, rejected, source) from the references and the champion's answers to the same prompts."""
    from tuneops.families.causal_lm.generation import exact_match, parse_label_list

    json_lists = response_format == "json_list"
    labels = sorted({label for r in references for label in (parse_label_list(r) or [])}) if json_lists else []
    rows, signs, near = [], [], []  # near: (row, reference labels) of the prompts the champion got right
    for prompt, reference, answer in zip(prompts, references, answers, strict=True):
        if json_lists:
            want = parse_label_list(reference) or []
            got = parse_label_list(answer)
            right = got is not None and set(got) == set(want)
        else:
            want, right = [], bool(exact_match(answer, reference))
        if not right and answer.strip() and answer.strip() != reference.strip():
            rows.append([prompt, reference, answer, "on_policy"])
            signs.append(length_sign(answer, want))
        elif json_lists:
            rows.append([prompt, reference, None, None])
            near.append((rows[-1], want))
    longer, shorter = length_mix(signs, len(near))  # drawn once the on-policy answers' lean is known
    for row, want in near:
        kind, row[2] = near_miss(want, labels, random.Random(f"{seed}:{row[0]}"), longer, shorter)
        row[3] = f"near_miss:{kind}"
    return pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", "source"])


def extend_pairs(earlier: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    """An earlier round's pairs plus the later model's mistakes on the prompts the earlier model got right.

    Iterative (on-policy) DPO: a preference-tuned model makes mistakes of its own (measured: lists that repeat
    labels until the token budget ends). Where the earlier round's model was right (its pair is a near miss),
    the later model's wrong answer is a mistake the tuning introduced; it is added as a second pair for that
    prompt (source ``on_policy:later``), so the next round learns against it too. Every earlier pair stays.
    """
    right_before = set(earlier.prompt[earlier.source.str.startswith("near_miss")])
    new = later[(later.source == "on_policy") & later.prompt.isin(right_before)]
    return pd.concat([earlier, new.assign(source="on_policy:later")], ignore_index=True)


def build_pairs(task: TuneopsConfig, champion: str | None = None, output: str | None = None,
                seed: int = 0, extend: str | None = None) -> PairsResult:
    """Generate with the champion on the task's training prompts, make the pairs, write them as JSONL.

    ``extend``: a pairs file of an earlier round; the result is those pairs plus this model's new mistakes
    (:func:`extend_pairs`)."""
    from tuneops.data.rows import select_subset
    from tuneops.data.splits import assign_splits
    from tuneops.data.storage import read_dataset
    from tuneops.errors import ConfigError
    from tuneops.families.causal_lm import generation, prepare_causal
    from tuneops.training.base_models import resolve

    if not (task.data.prompt_column and task.data.response_column):
        raise ConfigError(f"pairs are built from an instruction-tuning config with data.prompt_column and "
                          f"data.response_column (e.g. configs/nlupp_intents_llm.yaml); {task.registry.model_name}'s "
                          "config has none")
    earlier = read_dataset(extend) if extend else None  # before minutes of generation: a wrong path fails now
    if earlier is not None and not {"prompt", "chosen", "rejected", "source"} <= set(earlier.columns):
        raise ConfigError(f"--extend {extend}: not a pairs file of `tuneops pairs` (it needs the columns prompt, "
                          f"chosen, rejected and source; it has {', '.join(map(str, earlier.columns))})")
    champion = champion or f"models:/{task.registry.model_name}@champion"
    df = prepare_causal(select_subset(read_dataset(task.data.path), task.data), task)
    train = df[assign_splits(df, task.split_data(), task.split) == "train"]
    prompts, references = generation.examples(train, task)
    logging.getLogger("tuneops.families.preference.pairs").info("answering %d training prompts with %s", len(prompts),
                                                                 champion)
    answers = generation.Generator(resolve(champion), task.training.eval_batch_size).generate(prompts)
    pairs = make_pairs([str(p) for p in prompts], references, answers, task.model.response_format, seed)
    if earlier is not None:
        pairs = extend_pairs(earlier, pairs)
    path = Path(output) if output else default_output(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_json(path, orient="records", lines=True, force_ascii=False)
    signs = [length_sign(r, generation.parse_label_list(c) or []) for c, r in zip(pairs.chosen, pairs.rejected,
                                                                                   strict=True)]
    lengths = {"longer": signs.count(1), "shorter": signs.count(-1), "as long": signs.count(0)}
    return PairsResult(str(path), len(pairs), pairs.source.value_counts().to_dict(), champion, len(prompts),
                       lengths if task.model.response_format == "json_list" else {})
