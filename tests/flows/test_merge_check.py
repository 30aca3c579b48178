"""The merged-vs-unmerged check through the real flow, registry and loading path: a LoRA classifier whose merged copy
answers differently (the merge made to flip the head's sign) is registered all the same, with the failed check on
its run, its version and its model card; a runtime that merges (int8) is then refused for it with the figures and
the fix, before anything is measured, `auto` skips it, and fp32 still serves it. (The passing check of a real LoRA
and IA3 classifier, LoRA causal LM and preference-tuned model: test_methods.py, test_train_causal_lm.py and
test_train_preference.py, on the runs they train anyway.)"""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import LABELS, tiny_config
from tuneops.serving import runtime_check
from tuneops.serving.runtime_check import Agreement
from tuneops.serving.runtimes import RuntimeRefused
from tuneops.serving.scoring import load_verified
from tuneops.training import merge_check
from tuneops.training.merge_check import MergeCheck

pytestmark = [pytest.mark.slow, pytest.mark.integration]
NAME = "merge-check-flipped"
LORA = {"method": "lora", "epochs": 1, "learning_rate": 0.01, "lora": {"r": 4, "alpha": 8,
                                                                       "target_modules": ["query", "value"]}}


@pytest.fixture(scope="module")
def flipped(prefect_server, tiny_model, company_csv):
    from tuneops.flows.train_model import train_model

    merge = merge_check.merged_copy

    def wrong_head(trained):
        merged = merge(trained)
        merged.classifier.weight.data.neg_()
        merged.classifier.bias.data.neg_()
        return merged

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merge_check, "merged_copy", wrong_head)
        outcome = train_model(config=tiny_config(company_csv, tiny_model, NAME, training=LORA))
    return outcome, lambda **serving: tiny_config(company_csv, tiny_model, NAME, training=LORA, serving=serving)


def test_a_failed_check_is_recorded_on_the_run_the_version_and_the_card(flipped):
    outcome, _ = flipped
    check = MergeCheck.from_tags(outcome.merge_check)
    validation = pd.read_parquet(MlflowClient().download_artifacts(outcome.run_id, "splits/validation.parquet"))
    assert check is not None and not check.passed and check.kind == "label" and check.method == "lora"
    assert check.rows == len(validation) and check.share < 0.5 and check.max_diff > 0
    run_tags = MlflowClient().get_run(outcome.run_id).data.tags
    mv = MlflowClient().get_model_version(NAME, outcome.registration.version)  # registered all the same
    for tags in (run_tags, mv.tags):
        assert {k: v for k, v in tags.items() if k.startswith("tuneops.merge_check.")} == outcome.merge_check
    assert "## Merged vs unmerged" in mv.description and f"FAILED: {check.summary()}" in mv.description
    # and in the summary `tuneops train` prints
    from tuneops.cli import train_summary

    line = next(ln for ln in train_summary(outcome).splitlines() if ln.startswith("merge check  "))
    assert line.startswith(f"merge check  FAILED: {check.summary()}; runtimes that merge the adapter (bf16, int8, "
                           "onnx) refuse it; serving.runtime: fp32 (which does not merge) serves it"), line


def test_a_runtime_that_merges_is_refused_and_fp32_still_serves(flipped, monkeypatch):
    outcome, config = flipped
    version = outcome.registration.version

    def measured(*args, **kwargs):
        raise AssertionError("a refused runtime is not measured")

    monkeypatch.setattr(runtime_check, "measure", measured)
    with pytest.raises(RuntimeRefused, match=rf"runtime int8 merges the adapter into the base weights, and {NAME} "
                       rf"v{version} failed its merged-vs-unmerged check at training time \(same label on [\d.]+% of "
                       r"\d+ validation rows.*serve it with serving.runtime: fp32"):
        load_verified(config(runtime="int8"), version)
    with pytest.raises(RuntimeRefused, match="failed its merged-vs-unmerged check"):  # `tuneops runtime-check`
        runtime_check.check(config(), version, ["int8"], skip_unusable=False)
    assert runtime_check.check(config(), version, ["int8"]) == []  # --runtime all: skipped, nothing measured

    model, runtime = load_verified(config(runtime="fp32"), version)
    out = model.predict(pd.DataFrame({"text": ["I still have not received my new card", "change my pin"]}))
    assert runtime == "fp32" and set(out["label"]) <= set(LABELS)

    # auto skips a merging runtime here even with a recorded agreement that makes it the fastest; once the merge
    # check passes, the same record is chosen.
    cfg = config(runtime="auto")
    fast = Agreement("int8", "label", 10, 1.0, cfg.serving.runtime_min_label_agreement,
                     cfg.serving.runtime_confidence_tolerance, 0.0, 1.0, 1000.0, 100.0, True, "now")
    client = MlflowClient()
    for key, value in fast.tags().items():
        client.set_model_version_tag(NAME, version, key, value)
    assert runtime_check.choose(cfg, version) == "fp32"
    client.set_model_version_tag(NAME, version, "tuneops.merge_check.passed", "True")
    try:
        assert runtime_check.choose(cfg, version) == "int8"
    finally:
        client.set_model_version_tag(NAME, version, "tuneops.merge_check.passed", "False")
