"""The causal-LM core: metrics against hand-computed values, prompt rendering, loss masking, padding."""

from __future__ import annotations

import json

import pytest

from tuneops.families.causal_lm import generation
from tuneops.families.causal_lm.generation import IGNORE, encode_example, exact_match, pad_batch, render_prompt, rouge_l

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


def test_a_system_prompt_opens_text_prompts_and_replaces_the_templates_default(tokenizer):
    assert render_prompt(tokenizer, "hi", TEMPLATE, "Be brief.") == "Be brief.\n\n### Instruction:\nhi\n### Response:\n"
    chat = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    chat.chat_template = ("{% if messages[0]['role'] != 'system' %}<|system|>default\n{% endif %}"
                          "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert render_prompt(chat, "hi", TEMPLATE) == "<|system|>default\n<|user|>hi\n<|assistant|>"
    assert render_prompt(chat, "hi", TEMPLATE, "Be brief.") == "<|system|>Be brief.\n<|user|>hi\n<|assistant|>"
    conversation = [{"role": "user", "content": "hi"}]  # a conversation keeps its own messages
    assert render_prompt(chat, conversation, TEMPLATE, "Be brief.") == render_prompt(chat, conversation, TEMPLATE)
    ex = encode_example(tokenizer, "hi", "card arrival", TEMPLATE, 64, "Be brief.")
    assert tokenizer.decode(ex["input_ids"]).startswith("Be brief.")


@pytest.mark.parametrize(("text", "stops", "expected"), [
    ("card arrival\nand more", ["\n"], ("card arrival", True)),
    ('["a", "b"] trailing', ["]", " trailing"], ('["a", "b"', True)),  # the earliest stop string wins
    ("no stop here", ["\n"], ("no stop here", False)),
    ("anything", [], ("anything", False)),
])
def test_answers_are_cut_before_the_first_stop_string(text, stops, expected):
    assert generation.cut_at_stop(text, stops) == expected


@pytest.mark.parametrize(("prediction", "reference", "scores"), [
    ('["pin", "new"]', '["new", "pin"]', {"json_valid": 1, "set_match": 1, "tp": 2, "fp": 0, "fn": 0}),
    ('["pin"]', '["new", "pin"]', {"json_valid": 1, "set_match": 0, "tp": 1, "fp": 0, "fn": 1}),
    ('["pin", "card"]', '["pin"]', {"json_valid": 1, "set_match": 0, "tp": 1, "fp": 1, "fn": 0}),
    ("[]", "[]", {"json_valid": 1, "set_match": 1, "tp": 0, "fp": 0, "fn": 0}),
    ('["pin", ', '["pin"]', {"json_valid": 0, "set_match": 0, "tp": 0, "fp": 0, "fn": 1}),  # cut off: not JSON
    ('{"intent": "pin"}', '["pin"]', {"json_valid": 0, "set_match": 0, "tp": 0, "fp": 0, "fn": 1}),  # not a list
])
def test_json_list_answers_score_validity_set_match_and_label_counts(prediction, reference, scores):
    assert generation.label_set_scores(prediction, reference) == {k: float(v) for k, v in scores.items()}


def test_micro_f1_pools_every_label_of_every_answer():
    import pandas as pd

    from tuneops.evaluation.metrics import generation_metrics

    rows = [generation.label_set_scores(p, r) for p, r in [('["a", "b"]', '["a", "b"]'), ('["a"]', '["a", "c"]'),
                                                           ("oops", '["b"]')]]
    frame = pd.DataFrame(rows).assign(exact_match=0.0, rouge_l=0.0)
    metrics = generation_metrics(frame)
    # TP 3 (a, b, a), FP 0, FN 2 (c, b): micro-F1 = 2*3 / (2*3 + 0 + 2) = 0.75.
    assert metrics["micro_f1"] == pytest.approx(0.75)
    assert metrics["set_match"] == pytest.approx(1 / 3) and metrics["json_valid"] == pytest.approx(2 / 3)


def test_generated_answers_carry_token_counts_finish_reason_and_latency(tiny_causal_lm):
    gen = generation.Generator(tiny_causal_lm, batch_size=2,
                               settings=generation.GenerationSettings(TEMPLATE, 48, 4))
    prompts = ["Which intent: my card has not arrived", "hi", "Which intent: how do I change my pin number"]
    details = gen.generate_details(prompts)
    assert [d.response for d in details] == gen.generate(prompts)  # one path, in input order
    encoded = [len(gen.tokenizer(TEMPLATE.format(prompt=p))["input_ids"]) for p in prompts]
    assert [d.prompt_tokens for d in details] == encoded
    for d in details:
        assert 0 <= d.response_tokens <= 4 and d.latency_ms > 0
        assert d.finish_reason == ("length" if d.response_tokens == 4 else "stop")
    # A stop string ends an answer before it, and the answer counts as stopped, not cut off.
    stop = next(d.response for d in details if d.response)[0]
    gen.settings.stop_strings = [stop]
    stopped = gen.generate_details(prompts)
    assert all(stop not in d.response for d in stopped)
    assert all(d.finish_reason == "stop" for d, before in zip(stopped, details, strict=True) if stop in before.response)


def test_generation_settings_of_older_exports_still_load(tmp_path):
    (tmp_path / generation.GENERATION_FILE).write_text(json.dumps(
        {"prompt_template": TEMPLATE, "max_length": 48, "max_new_tokens": 4}))
    settings = generation.GenerationSettings.load(tmp_path)
    assert settings.stop_strings == [] and settings.system_prompt is None and settings.precision == "fp32"
