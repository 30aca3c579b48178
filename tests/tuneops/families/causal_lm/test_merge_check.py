"""A generator's merged-vs-unmerged check, through the family's training plan: a LoRA causal LM and its merged copy
give the same greedy answer (through the family's Generator) to every sampled validation prompt, bounded by
serving.runtime_check_prompts; a merge that changes the answers fails."""

from __future__ import annotations

import pandas as pd

from tests.conftest import causal_config, pretend_trained
from tuneops import families
from tuneops.families.causal_lm.merge_check import distinct
from tuneops.training import export, merge_check

LORA = {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}


def _planned(tiny_causal_lm, instruction_csv):
    cfg = causal_config(instruction_csv, tiny_causal_lm, "merge-unit", training=LORA,
                        serving={"runtime_check_prompts": 12})
    df = pd.read_csv(instruction_csv)
    frames = {"train": df.head(20), "validation": df.tail(40).reset_index(drop=True)}
    plan = families.of(cfg).plan_training(cfg, frames, tiny_causal_lm)
    return plan, pretend_trained(export.build_model(plan.load_base, cfg, "CAUSAL_LM"))


def test_a_lora_causal_lm_and_its_merged_copy_give_the_same_greedy_answers(tiny_causal_lm, instruction_csv):
    plan, model = _planned(tiny_causal_lm, instruction_csv)
    result = merge_check.run(model, plan.compare_merged, "lora")
    assert result.passed and result.kind == "answer" and result.rows == 12 and result.share == 1.0
    assert result.tags()["tuneops.merge_check.same_answer_share"] == "1.000000"


def test_a_merge_that_changes_the_answers_fails(tiny_causal_lm, instruction_csv, monkeypatch):
    plan, model = _planned(tiny_causal_lm, instruction_csv)
    merge = merge_check.merged_copy

    def wrong_output_layer(trained):
        merged = merge(trained)
        merged.lm_head.weight.data.neg_()  # greedy decoding now picks the least likely token
        return merged

    monkeypatch.setattr(merge_check, "merged_copy", wrong_output_layer)
    result = merge_check.run(model, plan.compare_merged, "lora")
    assert not result.passed and result.same < result.rows == 12


def test_each_prompt_is_compared_once():
    conversation = [{"role": "user", "content": "hi"}]
    assert distinct(["a", "b", "a", conversation, list(conversation)]) == ["a", "b", conversation]
