"""Per-row signals computed offline before the drift report: text descriptors and sentence embeddings.

Descriptors are vectorised pandas/tokenizer code (no NLTK, nothing downloaded); embeddings are
mean-pooled MiniLM vectors from the packaged model. Each becomes a column that Evidently compares.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

DESCRIPTORS = ("length", "word_count", "non_letter_share", "unknown_token_share")


@functools.cache
def _tokenizer(base: str) -> Any:
    from transformers import AutoTokenizer

    from tuneops.training.base_models import resolve as resolve_base

    return AutoTokenizer.from_pretrained(resolve_base(base))


def unknown_token_share(texts: pd.Series, base: str) -> np.ndarray:
    """Share of each text's word-piece tokens that the tokenizer maps to [UNK] (0 for empty texts)."""
    tok = _tokenizer(base)
    unk = tok.unk_token_id
    ids = tok(texts.tolist(), add_special_tokens=False, truncation=False)["input_ids"]
    return np.array([(sum(1 for i in row if i == unk) / len(row)) if row else 0.0 for row in ids])


def describe(texts: pd.Series, tokenizer_base: str) -> pd.DataFrame:
    """Length, word count, share of non-letter characters and share of unknown tokens per text.

    Computed once per distinct text (production traffic repeats itself) and spread back to every row.
    """
    codes, distinct = pd.factorize(texts.fillna("").astype(str))
    texts_ = pd.Series(distinct, dtype=object)
    length = texts_.str.len()
    letters_or_space = texts_.str.count(r"[^\W\d_]|\s")
    per_text = pd.DataFrame({
        "length": length.astype(float),
        "word_count": texts_.str.split().str.len().fillna(0).astype(float),
        "non_letter_share": ((length - letters_or_space) / length.clip(lower=1)).astype(float),
        "unknown_token_share": unknown_token_share(texts_, tokenizer_base),
    })
    return per_text.iloc[codes].set_index(texts.index)


@functools.cache
def _encoder(base: str) -> tuple[Any, Any]:
    from transformers import AutoModel

    from tuneops.training.base_models import resolve as resolve_base

    return _tokenizer(base), AutoModel.from_pretrained(resolve_base(base)).eval()


def embed(texts: list[str], base: str, batch_size: int = 128, max_length: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (MiniLM's sentence-transformers recipe).

    Each distinct text is encoded once (production traffic repeats itself), in length-sorted batches.
    """
    import torch

    tok, model = _encoder(base)
    codes, distinct = pd.factorize(pd.Series(texts, dtype=object))
    order = np.argsort([len(t) for t in distinct])
    out = np.zeros((len(distinct), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(distinct), batch_size):
            idx = order[start:start + batch_size]
            batch = tok([distinct[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=1).numpy()
    return out[codes]
