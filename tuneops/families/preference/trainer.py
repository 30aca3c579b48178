"""Preference tuning's library half: pairs encoded for TRL's DPOTrainer, the trainer the shared loop runs, and
the preference metric every causal LM can be scored by.

Pairs are tokenised here, the way :mod:`tuneops.families.causal_lm.generation` renders a prompt for generation (chat
template or
``model.prompt_template``, the system prompt, the response followed by EOS), so that DPO trains on exactly
the sequences the model later sees and is scored on. TRL's own dataset preparation is skipped for that.

The preference metric is defined for any causal LM, not through DPO's implicit reward (which is zero for
the reference model itself, so it cannot compare a tuned model with its starting point): a pair is won when
the model gives the chosen answer a higher length-normalised log-likelihood (mean log-probability per
response token, EOS included, given the prompt) than the rejected one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REF_ADAPTER = "ref"  # the copy of the adapter TRL makes to serve as the reference; see PreferenceTrainer


def encode_pair(tokenizer: Any, prompt: Any, chosen: str, rejected: str, template: str, max_length: int,
                system: str | None = None) -> dict[str, Any]:
    """Token ids of the prompt and of both answers (each + EOS), as TRL's preference collator takes them.

    Each answer is encoded as one training example of the causal-LM family (generation.encode_example);
    when that cuts the start of a long prompt, both answers share the shorter prompt, so the pair differs
    in the answers only.
    """
    from tuneops.families.causal_lm.generation import IGNORE, encode_example

    encoded = [encode_example(tokenizer, prompt, answer, template, max_length, system) for answer in (chosen, rejected)]
    prompts = [[t for t, label in zip(e["input_ids"], e["labels"], strict=True) if label == IGNORE] for e in encoded]
    answers = [e["input_ids"][len(p):] for e, p in zip(encoded, prompts, strict=True)]
    prompt_ids = min(prompts, key=len)
    return {"prompt_ids": prompt_ids, "chosen_ids": answers[0], "rejected_ids": answers[1],
            "length": len(prompt_ids) + max(len(answers[0]), len(answers[1]))}


@dataclass
class PairScores:
    """Per-pair length-normalised log-likelihoods under one model, and what they decide."""

    chosen_logp: list[float]
    rejected_logp: list[float]

    @property
    def margin(self) -> list[float]:
        return [c - r for c, r in zip(self.chosen_logp, self.rejected_logp, strict=True)]

    @property
    def correct(self) -> list[float]:
        """1.0 where the chosen answer is strictly more likely per token than the rejected one, else 0.0."""
        return [float(m > 0) for m in self.margin]


def score_pairs(generator: Any, prompts: list, chosen: list[str], rejected: list[str]) -> PairScores:
    """Mean log-probability per response token of each answer given its prompt (teacher forcing, one batch at a time).

    ``generator`` is a :class:`tuneops.families.causal_lm.generation.Generator`: the same encoding and weights as
    generation.
    """
    sums_c, counts_c = generator.response_nll(prompts, chosen)
    sums_r, counts_r = generator.response_nll(prompts, rejected)
    return PairScores([-s / max(n, 1) for s, n in zip(sums_c, counts_c, strict=True)],
                      [-s / max(n, 1) for s, n in zip(sums_r, counts_r, strict=True)])


def summary(scores: PairScores) -> dict[str, float]:
    """preference_accuracy (share of pairs won) and preference_margin (mean margin, nats per token)."""
    n = max(len(scores.correct), 1)
    return {"preference_accuracy": sum(scores.correct) / n, "preference_margin": sum(scores.margin) / n}


def trainer_class(beta: float, loss_type: str, label_smoothing: float, max_length: int, sft_weight: float = 0.0
                  ) -> type:
    """TRL's DPOTrainer, shaped for the shared loop (tuneops/training/trainer.py builds it like a transformers Trainer).

    - The loop hands it TrainingArguments built from the config; they become a DPOConfig with every field
      kept (checkpoints, evaluation, seed, precision, DeepSpeed) plus beta, the loss and the length limit;
      ``sft_weight`` adds TRL's 'sft' loss on the chosen answers with that weight (RPO).
    - The datasets are already tokenised (:func:`encode_pair`), so TRL's own preparation is skipped; the
      pair's length column stays in the batch so the length-grouped sampler can use it.
    - The reference model is the base with the adapters disabled: TRL copies a PEFT model's adapter into a
      second 'ref' adapter (meant for adapters that were trained before); for the fresh adapter the
      method puts on the base that copy is the base itself, so it is dropped again (no second adapter to
      store, train around or export).
    """
    import dataclasses

    from transformers import TrainingArguments
    from trl import DPOConfig, DPOTrainer

    class PreferenceTrainer(DPOTrainer):
        def __init__(self, *, args: TrainingArguments, **kwargs: Any):
            given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
            losses = [loss_type, "sft"] if sft_weight else [loss_type]
            config = DPOConfig(**given, beta=beta, loss_type=losses, loss_weights=[1.0, sft_weight][:len(losses)],
                               label_smoothing=label_smoothing, max_length=max_length)
            super().__init__(args=config, **kwargs)
            model = self.accelerator.unwrap_model(self.model)
            if REF_ADAPTER in getattr(model, "peft_config", {}):
                model.delete_adapter(REF_ADAPTER)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return dataset  # tokenised by encode_pair, exactly as generation renders prompts

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "length" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "length"]

    return PreferenceTrainer
