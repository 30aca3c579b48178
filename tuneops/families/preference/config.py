"""What the preference family adds to the config: the chosen and rejected columns and the ``preference:``
section (DPO settings and the supervised task it must not forget); its metrics, defaults and rules.

A preference-tuned model is a causal LM that generates, so this family also uses the causal_lm family's
prompt column, generation settings, answer drift thresholds and answer agreement check
(tuneops/families/causal_lm/config.py) and is scored on that family's metrics beside its own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

import tuneops.families.causal_lm.config as causal
from tuneops.families.schema import Config, FamilyConfig, Metric, OwnSection, Section

NAME = "preference"


class PairColumns(Section):
    """data: the two answers of a preference pair."""

    chosen_column: str | None = Field(
        None, description="model.task preference: column holding the preferred answer to the prompt.")
    rejected_column: str | None = Field(
        None, description="model.task preference: column holding the dispreferred answer to the same prompt.")


class PreferenceSettings(Section):
    """Preference tuning (model.task: preference): DPO through TRL, on top of model.base with LoRA (or another
    training.method); the reference model is the base with the adapters disabled."""

    task_config: str = Field(
        description="The supervised config (e.g. configs/nlupp_intents_llm.yaml) whose data and split define the "
        "supervised test split: every model is also scored on it with that task's metric (set_match, exact_match, "
        "...), so that preference tuning cannot buy preference accuracy by forgetting the task.")
    beta: float = Field(
        0.1, gt=0, le=10, description="DPO's beta: how far the tuned model may move from the reference; higher "
        "keeps it closer (for loss_type ipo, the regularisation tau).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm"] = Field(
        "sigmoid", description="TRL's DPO loss: 'sigmoid' (DPO), 'ipo' (IPO, less prone to overfit deterministic "
        "preferences), 'hinge' (SLiC), 'robust' (noisy labels; uses label_smoothing), 'sigmoid_norm' (DPO on "
        "length-normalised log-ratios).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="loss_type robust: assumed share of flipped preference labels (0..0.5).")
    sft_weight: float = Field(
        0.0, ge=0, le=10, description="Weight of a supervised loss (negative log-likelihood of the chosen answer) "
        "added to the preference loss (RPO). DPO alone can lower the chosen answers' likelihood along with the "
        "rejected ones and unlearn the task's format; this keeps the chosen answers likely. 0: DPO alone.")


METRICS = (
    Metric("preference_accuracy", "preference_accuracy (the share of held-out pairs whose chosen answer is more "
           "likely than the rejected one)", per_example=True),
    *causal.METRICS,  # the supervised task's test split, scored beside the pairs
)
METRIC_NAMES = tuple(m.name for m in METRICS)


def config_problems(cfg: Config) -> list[str]:
    """Columns, the preference section and gate metrics that a preference config needs or cannot use."""
    d, g = cfg.data, cfg.gate
    problems = []
    if not (d.prompt_column and d.chosen_column and d.rejected_column):
        problems.append("model.task preference needs data.prompt_column, data.chosen_column and data.rejected_column")
    if cfg.preference is None:
        problems.append("model.task preference needs a preference section with task_config (the supervised config "
                        "whose test split is scored beside the pairs)")
    for what, names in (("primary_metric", [g.primary_metric]), ("floors", list(g.floors)),
                        ("also_compare", g.also_compare)):
        wrong = sorted(k for k in names if k not in METRIC_NAMES)
        if wrong:
            problems.append(f"gate.{what} {', '.join(wrong)} do not apply to preference; use {', '.join(METRIC_NAMES)}")
    needs_labels = sorted({g.primary_metric, *g.floors, *g.also_compare} & set(causal.LABEL_SET_METRICS))
    if needs_labels and cfg.model.response_format != "json_list":
        problems.append(f"gate {', '.join(needs_labels)} score JSON-list answers; set model.response_format: "
                        "json_list or compare rouge_l / exact_match")
    if g.test == "mcnemar":
        problems.append("gate.test 'mcnemar' needs a classifier's per-example correctness; use bootstrap with "
                        "preference")
    return problems


def split_data(cfg: Config) -> Any:
    """The prompt keys a pair; the chosen answer stands for its target (data fingerprint, split counts)."""
    d = cfg.data
    return d.model_copy(update={"text_column": d.prompt_column, "label_column": d.chosen_column})


CONFIG = FamilyConfig(
    name=NAME,
    summary="preference tuning (DPO): a causal LM learns the chosen over the rejected answer to a prompt",
    fields={"data": (causal.PromptColumn, PairColumns), "model": (causal.Generation,),
            "monitoring.thresholds": (causal.AnswerThresholds,), "serving": (causal.AnswerAgreement,)},
    sections={"preference": OwnSection(
        PreferenceSettings, "model.task preference: DPO settings and the supervised task it must not forget.")},
    metrics=METRICS,
    gate_defaults={"primary_metric": "preference_accuracy", "floors": {}, "also_compare": ["exact_match"]},
    config_problems=config_problems,
    refusals=(causal.LABEL_SUBSET,),
    not_training=(*causal.GENERATION_ONLY, "preference.task_config"),  # the task is scored beside, not trained on
    split_data=split_data,
    accepts=causal.accepts,
)
