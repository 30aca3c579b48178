"""The causal-LM core: metrics against hand-computed values, prompt rendering, loss masking, padding."""

from __future__ import annotations

import json

import pytest

from tuneops import generation
from tuneops.generation import IGNORE, encode_example, exact_match, pad_batch, render_prompt, rouge_l

TEMPLATE = "### Instruction:\n{prompt}\n### Response:\n"


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    # LCS "the cat on the mat" = 5 of 6 words each way: P = R = F = 5/6.
    ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
    # LCS "a c" = 2: P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7.
    ("a b c d", "a c e", 4 / 7),
    # Order matters for a subsequence: LCS of "c b a" and "a b c" is 1 word: P = R = F = 1/3.
    ("c b a", "a b c", 1 / 3),
    ("Card arrival.", "card  ARRIVAL", 1.0),  # normalised: case, punctuation, whitespace
    ("nothing shared", "card arrival", 0.0),
    ("", "card arrival", 0.0),
    ("", "", 1.0),
])
def test_rouge_l_matches_hand_computed_f1(prediction, reference, expected):
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_exact_match_normalises_case_punctuation_and_space():
    assert exact_match(" Card arrival! ", "card arrival") == 1.0
    assert exact_match("card arrival soon", "card arrival") == 0.0
    assert exact_match("change_pin", "change pin") == 0.0  # underscore is a word character: not the same answer


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal_lm)


def test_prompt_tokens_are_masked_and_eos_is_trained(tokenizer):
    ex = encode_example(tokenizer, "Which intent: my card has not arrived", "card arrival", TEMPLATE, 64)
    prompt_ids = tokenizer(TEMPLATE.format(prompt="Which intent: my card has not arrived"))["input_ids"]
    response_ids = tokenizer("card arrival", add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"] == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert ex["labels"][:n] == [IGNORE] * n  # no loss on the prompt
    assert ex["labels"][n:] == response_ids + [tokenizer.eos_token_id]  # loss on the response and its EOS
    assert ex["labels"][-1] == tokenizer.eos_token_id and ex["attention_mask"] == [1] * len(ex["input_ids"])
    assert tokenizer.decode(ex["input_ids"][n:], skip_special_tokens=True) == "card arrival"


def test_too_long_example_keeps_its_response_and_drops_the_prompt_start(tokenizer):
    long_prompt = "Which intent: " + "my card has still not arrived " * 20
    ex = encode_example(tokenizer, long_prompt, "card arrival", TEMPLATE, 32)
    assert len(ex["input_ids"]) == 32
    trained = [t for t in ex["labels"] if t != IGNORE]
    assert trained == tokenizer("card arrival", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ex["input_ids"]).endswith("### Response:\ncard arrival</s>")


def test_collator_pads_labels_with_ignore_and_masks_attention(tokenizer):
    a = encode_example(tokenizer, "short", "card arrival", TEMPLATE, 64)
    b = encode_example(tokenizer, "a much longer prompt about my card", "change pin", TEMPLATE, 64)
    batch = pad_batch([a, b], tokenizer.pad_token_id)
    width = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, width)
    pad = width - len(a["input_ids"])
    assert pad > 0
    assert batch["labels"][0, -pad:].tolist() == [IGNORE] * pad
    assert batch["attention_mask"][0, -pad:].tolist() == [0] * pad
    assert batch["input_ids"][0, -pad:].tolist() == [tokenizer.pad_token_id] * pad
    assert batch["labels"][1].tolist() == b["labels"]


def test_chat_template_wins_over_the_configured_template(tokenizer):
    assert render_prompt(tokenizer, "hi", TEMPLATE) == "### Instruction:\nhi\n### Response:\n"
    chat = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert render_prompt(chat, "hi", TEMPLATE) == "<|user|>hi\n<|assistant|>"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert render_prompt(chat, messages, TEMPLATE) == "<|system|>be brief\n<|user|>hi\n<|assistant|>"


def test_messages_column_gives_prompt_messages_and_final_response():
    import pandas as pd

    from tuneops.config import validate_config

    cfg = validate_config({"data": {"path": "x.jsonl", "messages_column": "messages"},
                           "model": {"task": "causal_lm"}})
    conversation = [{"role": "user", "content": "my card?"}, {"role": "assistant", "content": "card arrival"}]
    frame = pd.DataFrame({"messages": [json.dumps(conversation), conversation]})
    prompts, responses = generation.examples(frame, cfg)
    assert prompts == [conversation[:1], conversation[:1]] and responses == ["card arrival", "card arrival"]


def test_perplexity_is_exp_of_mean_token_nll():
    import math

    assert generation.perplexity([2.0, 4.0], [2, 2]) == pytest.approx(math.exp(1.5))
