"""Preference pairs from a champion's answers: on-policy where it is wrong, a near miss where it is right."""

import json
import random

from tuneops.families.causal_lm.generation import parse_label_list
from tuneops.families.preference.pairs import NEAR_MISSES, extend_pairs, length_sign, make_pairs, near_miss

LABELS = ["card", "pin", "refund", "fees"]


def test_wrong_or_malformed_answers_become_the_rejected_answer():
    pairs = make_pairs(["p1", "p2", "p3"], ['["card"]', '["pin", "fees"]', '["refund"]'],
                       ['["pin"]', '["pin", "fee', '["card"]'], "json_list")
    assert pairs.source.tolist() == ["on_policy"] * 3
    assert pairs.rejected.tolist() == ['["pin"]', '["pin", "fee', '["card"]']
    assert pairs.chosen.tolist() == ['["card"]', '["pin", "fees"]', '["refund"]']


def test_right_answers_get_a_near_miss_that_is_wrong_and_stable():
    references = [json.dumps(r) for r in (["card"], ["pin", "fees"], [], ["refund", "card"])] * 10
    prompts = [f"prompt {i}" for i in range(len(references))]
    answers = [json.dumps(list(reversed(json.loads(r)))) for r in references]  # the same set, other order: right
    pairs = make_pairs(prompts, references, answers, "json_list", seed=3)
    assert pairs.source.str.startswith("near_miss:").all()
    assert {s.split(":")[1] for s in pairs.source} == set(NEAR_MISSES)  # every kind occurs
    for chosen, rejected, source in zip(pairs.chosen, pairs.rejected, pairs.source, strict=True):
        got = parse_label_list(rejected)
        assert rejected != chosen
        if source == "near_miss:broken_json":
            assert got is None
        elif source == "near_miss:repeat":  # the same set with a label named twice
            assert got is not None and len(got) == len(json.loads(chosen)) + 1 and set(got) == set(json.loads(chosen))
        else:
            assert got is not None and set(got) != set(json.loads(chosen))
    again = make_pairs(prompts[::-1], references[::-1], answers[::-1], "json_list", seed=3)
    assert sorted(again.rejected) == sorted(pairs.rejected)  # seeded by the prompt, not the row order


def test_near_miss_of_an_empty_list_adds_or_breaks():
    kinds = {near_miss([], LABELS, random.Random(i))[0] for i in range(30)}
    assert kinds == {"add", "broken_json"}
    # only a longer one wanted, but nothing can be added to an empty list without other labels: still a near miss
    assert near_miss([], [], random.Random(0), longer=1.0, shorter=0.0) == ("broken_json", "[")


def test_text_answers_give_on_policy_pairs_only():
    pairs = make_pairs(["a", "b"], ["card arrival", "change pin"], ["Card arrival.", "exchange rate"], "label")
    assert pairs.to_dict("records") == [{"prompt": "b", "chosen": "change pin", "rejected": "exchange rate",
                                         "source": "on_policy"}]


def test_near_misses_lean_long_where_the_champions_mistakes_lean_short():
    """A champion that under-predicts: its wrong answers name fewer labels than the reference. The near misses
    make up for it, so about as many rejected answers are longer than the reference as shorter."""
    rng = random.Random(0)
    prompts, references, answers = [], [], []
    for i in range(400):
        want = rng.sample(LABELS, rng.randint(2, 3))
        prompts.append(f"prompt {i}")
        references.append(json.dumps(want))
        # half wrong, always by leaving a label out; half right
        answers.append(json.dumps(want[:-1] if i % 2 else list(reversed(want))))
    pairs = make_pairs(prompts, references, answers, "json_list")
    signs = [length_sign(r, json.loads(c)) for c, r in zip(pairs.chosen, pairs.rejected, strict=True)]
    on_policy = pairs.source == "on_policy"
    assert on_policy.sum() == 200 and all(s == -1 for s, o in zip(signs, on_policy, strict=True) if o)
    near = pairs.source[~on_policy].str.split(":").str[1].value_counts()
    assert near.get("add", 0) + near.get("repeat", 0) > 100 and near.get("drop", 0) < 10
    assert abs(signs.count(1) - signs.count(-1)) < 40  # 400 pairs: balanced within 10%


def test_length_sign_counts_the_labels_of_malformed_answers_too():
    assert length_sign('["card", "pin", "card", "pi', ["card", "pin"]) == 1  # a list that does not end
    assert length_sign('["card"]', ["card", "pin"]) == -1
    assert length_sign('["fees", "pin"]', ["card", "pin"]) == 0


def test_a_later_round_adds_its_own_mistakes_where_the_earlier_model_was_right():
    earlier = make_pairs(["p1", "p2", "p3"], ['["card"]', '["pin"]', '["fees"]'],
                         ['["pin"]', '["pin"]', '["fees"]'], "json_list")  # wrong on p1, right on p2 and p3
    later = make_pairs(["p1", "p2", "p3"], ['["card"]', '["pin"]', '["fees"]'],
                       ['["fees"]', '["pin", "pin", "pin", "pi', '["fees"]'], "json_list")  # p2 now runs away
    pairs = extend_pairs(earlier, later)
    assert pairs.iloc[:3].equals(earlier)  # every earlier pair stays
    added = pairs.iloc[3:]
    assert added.to_dict("records") == [{"prompt": "p2", "chosen": '["pin"]', "rejected": '["pin", "pin", "pin", "pi',
                                         "source": "on_policy:later"}]
