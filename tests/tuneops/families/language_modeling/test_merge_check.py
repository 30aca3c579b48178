"""A language model's merged-vs-unmerged check, through the family's training plan: a model adapted on unlabelled
text scores texts, so every validation text's mean token loss must agree within training.export_tolerance, for
an encoder (masked LM, fixed masks) and a decoder; a merge that moves the losses fails."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import ROOT, pretend_trained
from tuneops import families
from tuneops.config import validate_config
from tuneops.training import export, merge_check


def _planned(base: str, modules: list[str]):
    cfg = validate_config({
        "data": {"path": "corpus.csv"}, "model": {"base": base, "task": "language_modeling", "max_length": 32},
        "training": {"method": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": modules}},
        "registry": {"model_name": "merge-unit", "experiment": "tests"}})
    texts = pd.read_csv(ROOT / "data/banking77/train.csv").text.head(32)
    frames = {"train": pd.DataFrame({"text": texts[:16]}), "validation": pd.DataFrame({"text": texts[16:]})}
    plan = families.of(cfg).plan_training(cfg, frames, base)
    return cfg, plan, pretend_trained(export.build_model(plan.load_base, cfg, plan.peft_task_type))


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_a_lora_language_model_and_its_merged_copy_score_every_text_alike(which, tiny_model, tiny_causal_lm,
                                                                          monkeypatch):
    base, modules = (tiny_model, ["query", "value"]) if which == "encoder" else (tiny_causal_lm, ["q_proj", "v_proj"])
    cfg, plan, model = _planned(base, modules)
    result = merge_check.run(model, plan.compare_merged, "lora")
    assert result.passed and result.kind == "loss" and result.rows == 16
    assert result.tolerance == cfg.training.export_tolerance and result.max_diff < 1e-4

    merge = merge_check.merged_copy

    def noisy(trained):  # a merge that moves the weights
        import torch

        merged = merge(trained)
        torch.manual_seed(1)
        with torch.no_grad():
            for parameter in merged.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.5)
        return merged

    monkeypatch.setattr(merge_check, "merged_copy", noisy)
    failed = merge_check.run(model, plan.compare_merged, "lora")
    assert not failed.passed and failed.max_diff > cfg.training.export_tolerance
