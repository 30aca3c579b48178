"""The merged-vs-unmerged check's shared part (tuneops/training/merge_check.py): which methods it applies to, that it
compares a merged copy and leaves the trained model as it is, its tags (read back as written), the model card's
section. Each family's comparison has its own tests (tests/tuneops/families/<name>/test_merge_check.py)."""

from __future__ import annotations

import pytest

from tests.conftest import LABELS, pretend_trained
from tuneops.training import merge_check
from tuneops.training.merge_check import MergeCheck


def test_it_applies_to_the_methods_that_merge_an_adapter():
    assert merge_check.applies("lora") and merge_check.applies("ia3")
    # full: plain weights already; prefix, prompt, bottleneck: nothing a runtime could merge
    assert not any(merge_check.applies(m) for m in ("full", "prefix", "prompt", "bottleneck"))


@pytest.mark.parametrize("check", [
    MergeCheck("label", 48, 48, max_diff=2.5e-7, method="lora", seconds=0.4),
    MergeCheck("label", 48, 45, max_diff=3.25, method="ia3", seconds=0.4),
    MergeCheck("answer", 200, 199, method="lora", seconds=12.0),
    MergeCheck("loss", 30, 30, max_diff=1e-6, tolerance=0.005, method="lora", seconds=1.0),
])
def test_tags_are_read_back_as_written_with_the_verdict_last(check):
    tags = check.tags()
    assert list(tags)[-1] == "tuneops.merge_check.passed" and tags["tuneops.merge_check.passed"] == str(check.passed)
    assert tags["tuneops.merge_check.rows"] == str(check.rows) and tags["tuneops.merge_check.method"] == check.method
    share = {"label": "same_label_share", "answer": "same_answer_share", "loss": "within_tolerance_share"}[check.kind]
    assert float(tags[f"tuneops.merge_check.{share}"]) == pytest.approx(check.share)
    back = MergeCheck.from_tags({"tuneops.task": "x", **tags})
    assert back is not None and (back.kind, back.rows, back.same, back.passed, back.method) == (
        check.kind, check.rows, check.same, check.passed, check.method)
    assert back.max_diff == (pytest.approx(check.max_diff) if check.max_diff is not None else None)


def test_one_row_in_ten_thousand_that_differs_still_fails_when_read_back():
    tags = MergeCheck("label", 20_000, 19_999, max_diff=0.5).tags()
    assert tags["tuneops.merge_check.same_label_share"] == "0.999950"
    assert not MergeCheck.from_tags(tags).passed


def test_no_check_or_part_of_one_reads_as_none():
    assert MergeCheck.from_tags({}) is None
    tags = MergeCheck("label", 10, 10, max_diff=0.0).tags()
    assert MergeCheck.from_tags({k: v for k, v in tags.items() if not k.endswith(".passed")}) is None
    assert MergeCheck.from_tags({**tags, "tuneops.merge_check.rows": "ten"}) is None


def test_the_summary_and_the_model_card_say_what_was_compared_and_what_it_blocks():
    failed = MergeCheck("label", 48, 40, max_diff=3.25, method="lora")
    assert failed.verdict() == ("FAILED: same label on 83.33% of 48 validation rows, largest logit difference 3.25, "
                                "method lora")
    card = "\n".join(merge_check.card_lines(failed.tags()))
    assert card.startswith("## Merged vs unmerged") and "FAILED: same label on 83.33%" in card
    assert "runtimes that merge the adapter (bf16, int8, onnx) refuse it" in card  # the registry's Runtime.merges
    assert "serving.runtime: fp32" in card
    passed = "\n".join(merge_check.card_lines(MergeCheck("answer", 12, 12, method="lora").tags()))
    assert "passed: same greedy answer on 100.00% of 12 validation prompts" in passed and "may serve it" in passed
    assert merge_check.card_lines({"tuneops.method": "full"}) == []


def _tiny_lora_classifier(tiny_model):
    from transformers import AutoModelForSequenceClassification

    from tuneops import methods
    from tuneops.methods.lora import LoraSettings

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=len(LABELS))
    return pretend_trained(methods.get("lora").prepare(base, LoraSettings(r=4, target_modules=["query", "value"]),
                                                       "SEQ_CLS"))


def test_the_check_compares_a_merged_copy_and_leaves_the_trained_model_unmerged(tiny_model):
    import torch

    model = _tiny_lora_classifier(tiny_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    def compare(unmerged, merged):
        seen.append((unmerged, merged))
        return MergeCheck("label", 3, 3, max_diff=0.0)

    result = merge_check.run(model, compare, "lora")
    assert result.passed and result.method == "lora" and result.seconds > 0
    unmerged, merged = seen[0]
    assert unmerged is model and merged is not model
    assert not any("lora_" in n for n, _ in merged.named_parameters())  # plain weights: the adapter merged in
    after = dict(model.named_parameters())
    assert set(after) == set(before) and all(torch.equal(before[n], after[n]) for n in before)  # left as trained


def test_methods_that_do_not_merge_and_families_without_a_comparison_record_nothing(tiny_model):
    def compare(unmerged, merged):
        raise AssertionError("not called")

    model = _tiny_lora_classifier(tiny_model)
    assert merge_check.run(model, compare, "full") is None
    assert merge_check.run(model, compare, "prefix") is None
    assert merge_check.run(model, None, "lora") is None
