"""Texts as token blocks, and texts scored by a language model: the one path for training, evaluation and serving.

A model adapted on unlabelled text (``model.task: language_modeling``) is an encoder trained on masked-language
modelling (``mlm``: BERT-like, e.g. the MiniLM) or a decoder trained on next-token prediction (``clm``: Llama-like,
e.g. SmolLM2); :func:`objective_of` reads which from the base model's config.json.

:class:`LanguageModelScorer` gives each text its summed negative log-likelihood and the number of tokens it
scored: a decoder predicts every token after the first (and the end of the text); an encoder predicts 15% of
the text's tokens (at least one), masked at positions drawn from a generator seeded by the text itself, so
every model (challenger, champion, base) is scored on the same masks, in any batch order. The mean of the
loss over the scored tokens is the loss; its exp the perplexity (for an encoder, a pseudo-perplexity).
Evaluation, the export check, the champion's re-scoring and the registered pyfunc all call it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Objective = Literal["mlm", "clm"]
SETTINGS_FILE = "tuneops_language_model.json"  # beside the exported weights: objective and block length
EVAL_MASK_PROBABILITY = 0.15
SCORING_BATCH = 32  # rows per forward pass when scoring: an encoder's logits are rows x tokens x vocabulary


def objective_of(config: dict[str, Any]) -> Objective | None:
    """'clm' for a decoder, 'mlm' for an encoder that has (or can be given) a masked-LM head; None: neither."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "clm"
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return "mlm"
    model_type = config.get("model_type")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder"):
        return "mlm"  # an encoder saved without a head (BertModel) or with another one (a classifier)
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    return None


def model_class(objective: Objective) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM


@dataclass(frozen=True)
class LanguageModelSettings:
    """What scoring needs to know about a trained model: its objective and the token length of a block."""

    objective: Objective
    max_length: int

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> LanguageModelSettings:
        path = Path(model_dir) / SETTINGS_FILE
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return cls(objective_of(config) or "clm", 128)


def document_ids(tokenizer: Any, text: str, objective: Objective) -> list[int]:
    """A text's token ids as it is trained and scored: [CLS] text [SEP] for an encoder, text + EOS for a decoder."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if objective == "clm" and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids


def blocks(documents: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate the documents' ids and cut them into blocks of ``block_size`` tokens (the last may be shorter):
    no padding is trained on, and a short text shares its block with the next ones."""
    stream = [token for ids in documents for token in ids]
    return [stream[i:i + block_size] for i in range(0, len(stream), block_size)]


def _pieces(ids: list[int], max_length: int, objective: Objective) -> list[list[int]]:
    """A text longer than one block scored as several (an encoder's pieces each get [CLS] and [SEP] again)."""
    if len(ids) <= max_length:
        return [ids]
    if objective == "mlm":
        inner, n = ids[1:-1], max_length - 2
        return [[ids[0], *inner[i:i + n], ids[-1]] for i in range(0, len(inner), n)]
    return [ids[i:i + max_length] for i in range(0, len(ids), max_length)]


def mask_positions(text: str, piece: int, candidates: list[int]) -> list[int]:
    """15% of the candidate positions (at least one), drawn by a generator seeded by the text and piece number."""
    import numpy as np

    if not candidates:
        return []
    seed = int.from_bytes(hashlib.sha256(f"{piece}\x00{text}".encode()).digest()[:8], "little")
    count = max(1, round(EVAL_MASK_PROBABILITY * len(candidates)))
    chosen = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    return sorted(candidates[i] for i in chosen)


class LanguageModelScorer:
    """Summed negative log-likelihood and scored-token count per text, from a folder or a model in memory."""

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = SCORING_BATCH, model: Any = None,
                 tokenizer: Any = None, settings: LanguageModelSettings | None = None, merge: bool = False,
                 share_base: bool = False):
        """A folder in any saved format (:func:`tuneops.training.model_loading.load_saved_model`, ``merge`` and
        ``share_base`` as there), or a model in memory with its tokenizer and settings."""
        import torch
        from transformers import AutoTokenizer

        from tuneops.training.model_loading import load_saved_model

        self.torch = torch
        if model is None:
            assert model_dir is not None
            settings = settings or LanguageModelSettings.load(Path(model_dir))
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            model = load_saved_model(model_dir, model_class(settings.objective), merge=merge, share_base=share_base)
        assert settings is not None and tokenizer is not None
        self.model, self.tokenizer, self.settings = model.eval(), tokenizer, settings
        self.batch_size = max(1, min(batch_size, SCORING_BATCH))
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.special = set(tokenizer.all_special_ids)

    def _rows(self, texts: list[str]) -> list[tuple[int, list[int], list[int]]]:
        """(text index, input ids, labels with -100 where nothing is predicted) per scored piece."""
        objective, rows = self.settings.objective, []
        for t, text in enumerate(texts):
            for p, ids in enumerate(_pieces(document_ids(self.tokenizer, text, objective), self.settings.max_length,
                                            objective)):
                if objective == "clm":
                    rows.append((t, ids, [-100, *ids[1:]]))  # the first token has no context to predict it from
                    continue
                masked = mask_positions(text, p, [i for i, tok in enumerate(ids) if tok not in self.special])
                inputs, labels = list(ids), [-100] * len(ids)
                for i in masked:
                    labels[i], inputs[i] = ids[i], self.tokenizer.mask_token_id
                rows.append((t, inputs, labels))
        return rows

    def score(self, texts: list[str]) -> tuple[list[float], list[int]]:
        """Per text: the summed negative log-likelihood of its scored tokens, and how many were scored."""
        torch = self.torch
        sums, counts = [0.0] * len(texts), [0] * len(texts)
        rows = sorted(self._rows(texts), key=lambda r: len(r[1]))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start:start + self.batch_size]
                width = max(len(r[1]) for r in batch)
                ids = torch.tensor([r[1] + [self.pad] * (width - len(r[1])) for r in batch], device=device)
                labels = torch.tensor([r[2] + [-100] * (width - len(r[2])) for r in batch], device=device)
                mask = torch.tensor([[1] * len(r[1]) + [0] * (width - len(r[1])) for r in batch], device=device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                if self.settings.objective == "clm":  # position i predicts token i + 1
                    logits, labels = logits[:, :-1], labels[:, 1:]
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                        reduction="none")
                for j, (t, *_) in enumerate(batch):
                    sums[t] += float(nll[j].sum())
                    counts[t] += int((labels[j] != -100).sum())
        return sums, counts


def loss_of(sums: list[float], counts: list[int]) -> float:
    """Token-weighted mean negative log-likelihood (its exp is the perplexity)."""
    return sum(sums) / max(sum(counts), 1)


def perplexity_of(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def masked_head(model: Any) -> tuple[Any, Any] | None:
    """(backbone, head) of a masked-LM model made of its base model and one head on the hidden states (BERT's
    ``bert`` and ``cls``, RoBERTa's ``roberta`` and ``lm_head``), PEFT-wrapped or not; None for other layouts."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    heads = [module for name, module in inner.named_children() if name != inner.base_model_prefix]
    return (backbone, heads[0]) if backbone is not None and len(heads) == 1 else None


def masked_lm_trainer() -> Any:
    """A Trainer whose masked-LM loss projects only the masked positions onto the vocabulary.

    The vocabulary projection is a step's largest matmul (hidden x 30,522 for BERT, per token, forward and
    backward) while 85% of the positions carry no label; the loss is the same mean over the masked tokens.
    Evaluation, distributed wrappers and layouts :func:`masked_head` does not know use the model's own loss.
    """
    import torch
    from transformers import Trainer

    class MaskedPositionsTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            parts = masked_head(model)
            if parts is None or return_outputs or model is not self.accelerator.unwrap_model(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            backbone, head = parts
            labels = inputs["labels"]
            hidden = backbone(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
            chosen = labels != -100
            nll = torch.nn.functional.cross_entropy(head(hidden[chosen]).float(), labels[chosen], reduction="sum")
            if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
                return nll / num_items_in_batch
            return nll / chosen.sum().clamp(min=1)

    return MaskedPositionsTrainer
