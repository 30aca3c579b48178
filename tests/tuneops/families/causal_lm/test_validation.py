"""The instruction-data contract: bad prompts, responses and conversations are caught with named checks."""

from __future__ import annotations

import pandas as pd

from tuneops import families
from tuneops.config import validate_config
from tuneops.families.causal_lm import prepare_causal


def validate_frame(df: pd.DataFrame, cfg):
    """The contract as the validate-data task runs it: the config's family, found by model.task."""
    return families.of(cfg).validate(df, cfg, None)


def config(base: str, **data):
    return validate_config({"data": {"path": "x.csv", **data}, "model": {"task": "causal_lm", "base": base},
                            "validation": {"min_rows": 5, "max_text_chars": 200}})


def failed(report) -> dict[str, int]:
    return {c.name: c.failing_rows for c in report.failures()}


def test_good_prompt_response_data_passes(tiny_causal_lm, instruction_csv):
    report = validate_frame(pd.read_csv(instruction_csv), config(tiny_causal_lm, prompt_column="prompt",
                                                                  response_column="response"))
    assert report.passed, report.summary()
    token = next(c for c in report.checks if c.name == "token length")
    assert "examples exceed model.max_length" in token.detail


def test_bad_prompts_and_responses_are_named(tiny_causal_lm):
    frame = pd.DataFrame({"prompt": ["Which intent: card", "", None, "x" * 300, "ok prompt", "fine\x07", "a", "b"],
                          "response": ["card arrival", "change pin", "pin", "pin", "   ", "pin", None,
                                       "mail me at jane.doe@example.com"]})
    report = validate_frame(frame, config(tiny_causal_lm, prompt_column="prompt", response_column="response"))
    assert failed(report) == {"prompt not blank": 1, "prompt not null": 1, "prompt length": 2,
                              "prompt control characters": 1, "response not null": 1, "response not blank": 1,
                              "personal data": 1}
    assert "jane.doe" not in report.summary() and "nothing was trained" in report.summary()


def test_missing_columns_name_the_config_fields(tiny_causal_lm):
    report = validate_frame(pd.DataFrame({"text": ["a"] * 10}), config(tiny_causal_lm, prompt_column="prompt",
                                                                        response_column="response"))
    assert not report.passed and "data.prompt_column" in report.summary()


def test_conversations_are_checked_and_serialised(tiny_causal_lm):
    good = [{"role": "user", "content": "Which intent: my card is late"}, {"role": "assistant", "content": "card"}]
    rows = [good] * 6 + [[{"role": "user", "content": "no answer"}], [{"text": "no role"}, good[1]],
                         [good[1], good[0]]]
    cfg = config(tiny_causal_lm, messages_column="messages")
    report = validate_frame(pd.DataFrame({"messages": rows}), cfg)
    shape = next(c for c in report.checks if c.name == "conversation shape")
    assert not shape.passed and shape.failing_rows == 3
    assert any("not 'assistant'" in e for e in shape.examples)
    ready = prepare_causal(pd.DataFrame({"messages": [good] * 6}), cfg)
    assert isinstance(ready.messages[0], str) and ready.messages[0].startswith('[{"role": "user"')
    assert validate_frame(pd.DataFrame({"messages": [good] * 6}), cfg).passed
