"""A classifier's merged-vs-unmerged check, through the family's training plan (the comparison the trainer calls):
a LoRA classifier and its merged copy give the same label on every validation row, with logits equal to float
rounding; a merge that gets the head wrong fails with its figures."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import pretend_trained, tiny_config
from tuneops import families
from tuneops.training import export, merge_check

LORA = {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}}


@pytest.fixture
def planned(tiny_model, company_csv):
    def plan(**serving):
        cfg = tiny_config(company_csv, tiny_model, "merge-unit", training=LORA, serving=serving)
        df = pd.read_csv(company_csv)
        frames = {"train": df.iloc[1::3], "validation": df.iloc[::3].reset_index(drop=True)}
        plan = families.of(cfg).plan_training(cfg, frames, tiny_model)
        return cfg, frames, plan, pretend_trained(export.build_model(plan.load_base, cfg, "SEQ_CLS"))
    return plan


def test_a_lora_classifier_and_its_merged_copy_give_the_same_label_on_every_row(planned):
    cfg, frames, plan, model = planned()
    result = merge_check.run(model, plan.compare_merged, "lora")
    assert result.passed and result.kind == "label" and result.method == "lora"
    assert result.rows == len(frames["validation"]) == 80 and result.share == 1.0
    assert 0.0 <= result.max_diff < 1e-4  # float rounding of the merge, nothing more
    assert any("lora_A" in n for n, _ in model.named_parameters())  # the trained model itself stays unmerged
    # Beyond serving.runtime_check_rows a seeded sample is compared.
    _, _, plan, model = planned(runtime_check_rows=25)
    assert merge_check.run(model, plan.compare_merged, "lora").rows == 25


def test_a_merge_that_changes_labels_fails_with_its_figures(planned, monkeypatch):
    cfg, frames, plan, model = planned()
    merge = merge_check.merged_copy

    def wrong_head(trained):  # a merge that gets the head wrong: every logit's sign flipped
        merged = merge(trained)
        merged.classifier.weight.data.neg_()
        merged.classifier.bias.data.neg_()
        return merged

    monkeypatch.setattr(merge_check, "merged_copy", wrong_head)
    result = merge_check.run(model, plan.compare_merged, "lora")
    assert not result.passed and result.share < 0.5 and result.max_diff > 1e-3
    assert result.tags()["tuneops.merge_check.passed"] == "False"
    assert result.verdict().startswith(f"FAILED: same label on {result.share:.2%} of 80 validation rows")
