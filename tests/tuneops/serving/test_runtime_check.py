"""The merge rule of the runtime check, on its own: which runtimes merge an adapter into the weights, and which
versions they refuse (a failed merged-vs-unmerged check) or serve (a passed one, or none: versions registered
before the check, with merged weights). The refusal on a registered version: tests/flows/test_merge_check.py."""

from __future__ import annotations

import pytest

from tuneops.serving import runtimes
from tuneops.serving.runtime_check import merge_refusal
from tuneops.training.merge_check import MergeCheck

FAILED = MergeCheck("label", 80, 61, max_diff=2.75, method="lora").tags()
PASSED = MergeCheck("label", 80, 80, max_diff=3e-7, method="lora").tags()


def test_the_runtimes_that_need_plain_weights_merge_and_fp32_does_not():
    assert {name: r.merges for name, r in runtimes.RUNTIMES.items()} == {
        "bf16": True, "fp32": False, "int8": True, "onnx": True}


@pytest.mark.parametrize("runtime", ["int8", "onnx", "bf16"])
def test_a_runtime_that_merges_is_refused_for_a_version_whose_check_failed(runtime):
    refused = merge_refusal("intent", "7", runtime, {"tuneops.method": "lora", **FAILED})
    assert refused is not None and isinstance(refused, runtimes.RuntimeRefused)
    message = str(refused)
    assert message.startswith(f"runtime {runtime} merges the adapter into the base weights, and intent v7 failed its "
                              "merged-vs-unmerged check at training time (same label on 76.25% of 80 validation rows, "
                              "largest logit difference 2.75, method lora): merged, it does not answer as it was "
                              "trained")
    assert "serve it with serving.runtime: fp32" in message


def test_fp32_a_passed_check_and_a_version_without_one_are_not_refused():
    assert merge_refusal("intent", "7", "fp32", FAILED) is None  # fp32 does not merge
    assert merge_refusal("intent", "7", "auto", FAILED) is None  # auto chooses among the others
    assert merge_refusal("intent", "7", "int8", PASSED) is None
    # registered before the check existed (merged weights), full fine-tuning, a method that cannot merge
    assert merge_refusal("intent", "7", "int8", {"tuneops.method": "lora"}) is None


def test_versions_registered_before_the_check_are_not_refused_for_it(old_format_versions):
    """Every committed old-format version (merged weights, or a frozen base/ beside an adapter that cannot merge)
    holds no merged-vs-unmerged check: no runtime is refused for its lack."""
    from tuneops.serving.runtime_check import _tags

    for old in old_format_versions:
        tags = _tags(old.name, old.version)
        assert not any(k.startswith("tuneops.merge_check.") for k in tags), old.id
        assert all(merge_refusal(old.name, old.version, runtime, tags) is None for runtime in runtimes.RUNTIMES)
