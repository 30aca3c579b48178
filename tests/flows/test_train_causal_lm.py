"""The train_model flow for the causal_lm family on a real temporary Prefect server and SQLite MLflow store.

A tiny Llama-style model (random weights, a BPE tokenizer trained locally) is instruction-tuned to answer
'Which intent: <query>' with the intent in words. That is learnable in seconds, so the tests can ask
for real learning: exact match on held-out prompts well above always answering the most common intent.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import causal_config, run_cli
from tuneops.families.causal_lm.generation import GENERATED_COLUMNS
from tuneops.registry import versions as registry

pytestmark = [pytest.mark.slow, pytest.mark.integration]
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def majority_rate(test_path: str) -> float:
    return float(pd.read_parquet(test_path).response.value_counts(normalize=True).iloc[0])


@pytest.fixture(scope="module")
def full_then_lora(prefect_server, tiny_causal_lm, instruction_csv):
    """Full fine-tuning registers the first champion; a LoRA run is then gated against it."""
    from tuneops.flows.train_model import train_model

    full = train_model(config=causal_config(instruction_csv, tiny_causal_lm, "causal-intent"))
    lora = train_model(config=causal_config(
        instruction_csv, tiny_causal_lm, "causal-intent",
        training={"method": "lora", "learning_rate": 0.01,
                  "lora": {"r": 8, "alpha": 16, "target_modules": LLAMA_LINEAR}},
        gate={"primary_metric": "exact_match", "floors": {"exact_match": 0.0}}))
    return full, lora


def test_full_fine_tuning_learns_and_registers_a_generator(full_then_lora):
    full, _ = full_then_lora
    assert full.registration.version == "1" and full.decision.passed
    run = MlflowClient().get_run(full.run_id)
    test_path = MlflowClient().download_artifacts(full.run_id, "splits/test.parquet")
    # Learned something real: exact match on unseen prompts far above always answering the commonest intent.
    assert full.test_metrics["exact_match"] > majority_rate(test_path) + 0.3, full.test_metrics
    assert full.test_metrics["rouge_l"] >= full.test_metrics["exact_match"]
    assert 1.0 < full.test_metrics["perplexity"] < 2.0  # from a vocabulary of ~1,000: the responses were learned
    history = MlflowClient().get_metric_history(full.run_id, "validation_loss")
    assert history[-1].value < 0.5 * history[0].value  # validation loss on responses dropped by more than half
    mv = MlflowClient().get_model_version("causal-intent", "1")
    assert mv.tags["tuneops.task"] == "causal_lm" and mv.tags["tuneops.method"] == "full"
    assert mv.tags["tuneops.metric.test_rouge_l"] == f"{full.test_metrics['rouge_l']:.6f}"
    assert mv.description.startswith("# Model card: causal-intent") and "ROUGE-L" in mv.description
    assert run.data.params["model.task"] == "causal_lm"
    report = Path(MlflowClient().download_artifacts(full.run_id, "evaluation/report.md")).read_text()
    assert "ROUGE-L" in report and "## Gate: PASSED" in report and "floor rouge_l" in report
    # A first LLM is gated against what it started from: the zero-shot base on the same test prompts.
    assert "## zero-shot base model vs fine-tuned" in report and "| lift over baseline (zero-shot base" in report
    assert "over the baseline (zero-shot base model" in full.decision.reason
    lift = float(mv.tags["tuneops.lift_over_baseline.rouge_l"])
    baseline = run.data.metrics["baseline_test_rouge_l"]
    assert lift > 0.3 and lift == pytest.approx(full.test_metrics["rouge_l"] - baseline, abs=1e-6)
    assert mv.tags["tuneops.lift_over_baseline.ci"].startswith("[+")
    scores = pd.read_parquet(MlflowClient().download_artifacts(full.run_id, "evaluation/challenger_test.parquet"))
    assert {"y_true", "y_pred", "exact_match", "rouge_l", "nll", "tokens"} <= set(scores.columns)
    assert scores.exact_match.mean() == pytest.approx(full.test_metrics["exact_match"])


def test_registered_generator_answers_prompts(full_then_lora):
    model = mlflow.pyfunc.load_model("models:/causal-intent/1")
    assert model.metadata.get_input_schema().input_names() == ["prompt"]
    prompts = ["Which intent: How do I change my PIN?", "Which intent: what exchange rate do you use?",
               "Which intent: my card still has not arrived"]
    out = model.predict(pd.DataFrame({"prompt": prompts}))
    assert list(out.columns) == ["response", "prompt_tokens", "response_tokens", "finish_reason", "latency_ms"]
    assert len(out) == 3 and set(out.finish_reason) <= {"stop", "length"} and (out.prompt_tokens > 0).all()
    answers = {"activate my card", "card arrival", "change pin", "exchange rate"}
    assert sum(r in answers for r in out.response) >= 2, out.response.tolist()


def test_predict_cli_writes_responses_and_score_batch_logs_them(
        full_then_lora, tiny_causal_lm, instruction_csv, tmp_path):
    import yaml

    from tuneops.errors import ConfigError
    from tuneops.flows.score_batch import score_batch

    cfg = causal_config(instruction_csv, tiny_causal_lm, "causal-intent")
    config = tmp_path / "causal.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    prompts = ["Which intent: How do I change my PIN?", "Which intent: my card still has not arrived"]
    pd.DataFrame({"prompt": prompts}).to_csv(tmp_path / "prompts.csv", index=False)

    proc = run_cli("predict", "--config", str(config), "--input", str(tmp_path / "prompts.csv"),
               "--output", str(tmp_path / "answers.jsonl"))
    assert proc.returncode == 0, proc.stderr
    out = pd.read_json(tmp_path / "answers.jsonl", lines=True, dtype=False)
    champion = registry.alias_version("causal-intent", "champion")
    assert list(out.columns) == ["prompt", "response", "prompt_tokens", "response_tokens", "finish_reason",
                                 "latency_ms", "model_version"] and out.prompt.tolist() == prompts
    assert (out.model_version.astype(str) == champion).all()
    served = mlflow.pyfunc.load_model(f"models:/causal-intent/{champion}").predict(pd.DataFrame({"prompt": prompts}))
    assert out.response.tolist() == served.response.tolist()  # the registered pyfunc's answers, unchanged

    # score_batch appends the same answers, stamped, to the date-partitioned production log.
    batch = score_batch(config=cfg, input=str(tmp_path / "prompts.csv"), output=str(tmp_path / "log"))
    logged = pd.read_json(batch.uri, lines=True, dtype=False)
    assert batch.rows == 2 and batch.version == champion and "/date=" in batch.uri
    assert logged.response.tolist() == out.response.tolist() and logged.request_id.is_unique
    # Search is the one stage a generator does not offer yet; it is refused by name.
    from tuneops import families

    with pytest.raises(ConfigError, match="is a causal LM .*train_model once per"):
        families.require(cfg, "tune_hyperparameters", families.of(cfg).search_metric is not None)


def test_lora_is_gated_against_the_rescored_champion(full_then_lora):
    full, lora = full_then_lora
    assert lora.registration.version == "2" and lora.decision.champion_version == "1"
    run = MlflowClient().get_run(lora.run_id).data
    # The champion was re-scored through its registered pyfunc on the same test split: same generations.
    assert run.metrics["champion_test_exact_match"] == pytest.approx(full.test_metrics["exact_match"])
    vs = next(c for c in lora.decision.checks if c["check"].startswith("vs champion"))
    assert "exact_match, paired bootstrap" in vs["check"]
    assert vs["delta"] == pytest.approx(lora.test_metrics["exact_match"] - full.test_metrics["exact_match"])
    assert vs["ci_low"] <= vs["delta"] <= vs["ci_high"]
    assert lora.registration.promoted == lora.decision.passed
    assert registry.alias_version("causal-intent", "challenger") == "2"
    assert registry.alias_version("causal-intent", "champion") == ("2" if lora.decision.passed else "1")
    # Adapters on a random base barely move the (near-uniform) loss, but they do move the argmax: greedy
    # answers on unseen prompts beat always answering the commonest intent.
    history = MlflowClient().get_metric_history(lora.run_id, "validation_loss")
    assert history[-1].value < history[0].value
    test_path = MlflowClient().download_artifacts(lora.run_id, "splits/test.parquet")
    assert lora.test_metrics["exact_match"] > majority_rate(test_path) + 0.2, lora.test_metrics
    assert MlflowClient().get_model_version("causal-intent", "2").tags["tuneops.method"] == "lora"
    # LoRA merges: merged and unmerged gave the same greedy answer to every validation prompt (fewer than the cap).
    from tuneops.training.merge_check import MergeCheck

    validation = pd.read_parquet(MlflowClient().download_artifacts(lora.run_id, "splits/validation.parquet"))
    check = MergeCheck.from_tags(MlflowClient().get_model_version("causal-intent", "2").tags)
    assert check is not None and check.passed and check.kind == "answer", lora.merge_check
    assert check.rows == validation.prompt.nunique() and check.method == "lora"
    assert MlflowClient().get_run(lora.run_id).data.tags["tuneops.merge_check.passed"] == "True"
    assert MergeCheck.from_tags(MlflowClient().get_model_version("causal-intent", "1").tags) is None  # full


def test_perplexity_ceiling_blocks_promotion_and_says_so(prefect_server, tiny_causal_lm, instruction_csv):
    from tuneops.flows.train_model import train_model

    name = "causal-ceiling"
    outcome = train_model(config=causal_config(instruction_csv, tiny_causal_lm, name, training={"epochs": 1},
                                               gate={"max_perplexity": 1.0001}))
    perplexity = MlflowClient().get_run(outcome.run_id).data.metrics["test_perplexity"]
    assert perplexity > 1.0001
    assert not outcome.decision.passed
    assert outcome.decision.reason == (f"not promoted: perplexity {perplexity:.3f} is above the ceiling 1.000 "
                                       "(gate.max_perplexity)")
    assert not outcome.registration.promoted and registry.alias_version(name, "champion") is None


def test_prompt_tuning_exports_base_plus_adapter(prefect_server, tiny_causal_lm, instruction_csv):
    from tuneops.flows.train_model import train_model

    outcome = train_model(config=causal_config(
        instruction_csv, tiny_causal_lm, "causal-prompt-tuning",
        training={"method": "prompt", "epochs": 2, "learning_rate": 0.03, "prompt": {"num_virtual_tokens": 4}}))
    assert outcome.registration.version == "1"
    out = mlflow.pyfunc.load_model("models:/causal-prompt-tuning/1").predict(
        pd.DataFrame({"prompt": ["Which intent: change my pin"]}))
    assert list(out.columns) == GENERATED_COLUMNS and isinstance(out.response[0], str)


def test_chat_messages_data_trains_and_the_champion_is_rescored(prefect_server, tiny_causal_lm, instruction_csv,
                                                                tmp_path):
    """A messages column (JSONL conversations) goes through validation, split, training, re-scoring and serving."""
    import json

    from tuneops.flows.train_model import train_model

    frame = pd.read_csv(instruction_csv)
    path = tmp_path / "chats.jsonl"
    chats = [[{"role": "system", "content": "Name the intent."}, {"role": "user", "content": p},
              {"role": "assistant", "content": r}] for p, r in zip(frame.prompt, frame.response, strict=True)]
    pd.DataFrame({"messages": chats}).to_json(path, orient="records", lines=True)
    name = "causal-chat"
    cfg = causal_config(str(path), tiny_causal_lm, name, data={"prompt_column": None, "response_column": None,
                                                               "messages_column": "messages"},
                        training={"epochs": 2},
                        # Two epochs teach the random tiny model little beyond its base (the lift gate would rightly
                        # refuse it); this test is about conversations through every stage, so it reports the lift.
                        gate={"min_lift_over_baseline": None})
    first, second = train_model(config=cfg), train_model(config=cfg)
    assert first.registration.version == "1" and second.decision.champion_version == "1"
    run = MlflowClient().get_run(second.run_id).data
    assert run.metrics["champion_test_rouge_l"] == pytest.approx(first.test_metrics["rouge_l"])
    conversation = [{"role": "system", "content": "Name the intent."},
                    {"role": "user", "content": "Which intent: change my pin"}]
    out = mlflow.pyfunc.load_model(f"models:/{name}/2").predict(pd.DataFrame({"prompt": [json.dumps(conversation)]}))
    assert list(out.columns) == GENERATED_COLUMNS and len(out) == 1

    # `tuneops predict` reads conversations from the messages column of a JSONL file (lists, not text).
    from tuneops.serving.scoring import predict_file

    pd.DataFrame({"messages": [conversation]}).to_json(tmp_path / "ask.jsonl", orient="records", lines=True)
    written = predict_file(cfg, str(tmp_path / "ask.jsonl"), str(tmp_path / "answers.jsonl"))
    answers = pd.read_json(tmp_path / "answers.jsonl", lines=True, dtype=False)
    assert written.rows == 1 and json.loads(answers.prompt[0]) == conversation
    assert answers.response[0] == out.response[0]


def test_a_registered_champion_is_a_base_with_its_lineage_recorded(full_then_lora, tiny_causal_lm, instruction_csv):
    """models:/NAME@champion as model.base: the next model starts from the registered weights (SFT -> next stage)."""
    from tuneops.flows.train_model import train_model

    champion = registry.alias_version("causal-intent", "champion")
    champion_run = MlflowClient().get_model_version("causal-intent", champion).run_id
    cfg = causal_config(instruction_csv, "models:/causal-intent@champion", "causal-from-champion",
                        model={"base": "models:/causal-intent@champion", "task": "causal_lm", "max_length": 48,
                               "max_new_tokens": 6},
                        training={"epochs": 1},
                        # It starts from a trained model: its lift over that base is reported, not gated.
                        gate={"min_lift_over_baseline": None})
    outcome = train_model(config=cfg)
    mv = MlflowClient().get_model_version("causal-from-champion", outcome.registration.version)
    assert mv.tags["tuneops.base_model"] == "models:/causal-intent@champion"
    assert mv.tags["tuneops.base_model.registered"] == f"causal-intent/{champion}"
    assert mv.tags["tuneops.base_model.run_id"] == champion_run
    # Starting from the trained champion, not from the random tiny model: it answers from the first epoch on.
    assert outcome.test_metrics["exact_match"] > majority_rate(
        MlflowClient().download_artifacts(outcome.run_id, "splits/test.parquet")) + 0.3, outcome.test_metrics


def test_a_registered_base_that_does_not_exist_is_named():
    from tuneops.errors import ConfigError
    from tuneops.training.base_models import preflight

    with pytest.raises(ConfigError, match=r"model.base 'models:/no-such-model@champion' is not in the model registry"):
        preflight("models:/no-such-model@champion", "causal_lm")
