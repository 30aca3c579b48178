"""The causal-LM (instruction tuning) prediction path: prompt rendering, loss masking, generation, metrics.

One module so training, evaluation, export verification and the registered pyfunc render a prompt
the same way: through the tokenizer's chat template when it has one, else through
``model.prompt_template``. A training example is ``prompt tokens + response tokens + EOS`` with the
prompt tokens' labels set to -100, so the loss (and perplexity) is over the response only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.models import ADAPTER_DIR, BASE_DIR

IGNORE = -100  # label id the loss skips (PyTorch cross-entropy's ignore_index)
GENERATION_FILE = "tuneops_generation.json"  # template and lengths saved beside the exported weights

Prompt = str | list[dict[str, str]]


# --------------------------------------------------------------------------- metrics


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace: the identity exact match compares."""
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalise_answer(prediction) == normalise_answer(reference))


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised word tokens: LCS precision and recall, their harmonic mean.

    Two empty texts match perfectly (1.0); one empty text scores 0.0.
    """
    p, r = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not p and not r:
        return 1.0
    common = _lcs(p, r)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- data


def examples(frame: Any, cfg: Any) -> tuple[list[Prompt], list[str]]:
    """Prompts and reference responses of a frame, from prompt/response columns or a messages column."""
    d = cfg.data
    if not d.messages_column:
        return frame[d.prompt_column].astype(str).tolist(), frame[d.response_column].astype(str).tolist()
    prompts, responses = [], []
    for value in frame[d.messages_column]:
        messages = parse_messages(value)
        prompts.append(messages[:-1])
        responses.append(str(messages[-1]["content"]))
    return prompts, responses


def parse_messages(value: Any) -> list[dict[str, str]]:
    """A conversation as a list of {role, content}; JSON text is parsed (that is how splits store it)."""
    messages = json.loads(value) if isinstance(value, str) else list(value)
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def as_prompt(value: Any) -> Prompt:
    """A serving input as a prompt: a list of messages, JSON text of one (how a table carries it), or plain text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[{") and text.endswith("}]"):
            try:
                return parse_messages(text)
            except (ValueError, KeyError, TypeError):
                return value
        return value
    if isinstance(value, dict):
        return str(value)
    return parse_messages(value)


def render_prompt(tokenizer: Any, prompt: Prompt, template: str) -> str:
    """The text the model sees before its response: chat template if the tokenizer has one, else ``template``."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return template.format(prompt=text)


def ensure_pad_token(tokenizer: Any) -> None:
    """Many causal LMs ship without a pad token; padding then reuses EOS (masked out by attention and labels)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def encode_example(tokenizer: Any, prompt: Prompt, response: str, template: str, max_length: int) -> dict[str, list]:
    """Token ids of prompt + response + EOS, labels -100 on the prompt (loss on the response and EOS only).

    The prompt is tokenized on its own, exactly as generation will see it. Too long an example keeps
    its response (up to half of ``max_length``) and drops the start of the prompt.
    """
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt, template), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"][: max(max_length // 2 - 1, 1)]
    response_ids = [*response_ids, tokenizer.eos_token_id]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):] if len(prompt_ids) + len(response_ids) > max_length \
        else prompt_ids
    ids = prompt_ids + response_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE] * len(prompt_ids) + response_ids}


def pad_batch(features: list[dict[str, list]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch to its longest row: pad ids, attention 0, labels -100 (padding is never trained)."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE}
    return {key: torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
            for key, value in fill.items()}


class CausalCollator:
    """Dynamic padding for the Trainer (a class, not a lambda, so checkpoints and workers can pickle it)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list]]) -> dict[str, Any]:
        return pad_batch(features, self.pad_id)


def response_nll(model: Any, batches: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood and token count of each example's response (teacher forcing)."""
    import torch

    sums: list[float] = []
    counts: list[int] = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            logits = logits[:, -batch["labels"].shape[1]:]  # soft prompts prepend virtual positions
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE,
                                                       reduction="none")
            sums += losses.sum(-1).tolist()
            counts += (labels != IGNORE).sum(-1).tolist()
    return sums, counts


def perplexity(sums: list[float], counts: list[int]) -> float:
    """exp(mean NLL per response token): the perplexity of the references under the model."""
    return math.exp(sum(sums) / max(sum(counts), 1))


# --------------------------------------------------------------------------- a saved generator


@dataclass
class GenerationSettings:
    """What serving needs besides weights and tokenizer: the template and the length limits."""

    prompt_template: str
    max_length: int
    max_new_tokens: int

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / GENERATION_FILE).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> GenerationSettings:
        return cls(**json.loads((Path(model_dir) / GENERATION_FILE).read_text()))


class Generator:
    """A saved causal LM (merged weights, or base + PEFT adapter) with its tokenizer and settings.

    The one generation path: evaluation, export verification and the registered pyfunc use it.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 32, model: Any = None, tokenizer: Any = None,
                 settings: GenerationSettings | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        model_dir = Path(model_dir)
        self.settings = settings or GenerationSettings.load(model_dir)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
        ensure_pad_token(self.tokenizer)
        if model is not None:
            self.model = model.eval()
        elif (model_dir / ADAPTER_DIR).is_dir() and (model_dir / BASE_DIR).is_dir():
            from peft import PeftModel  # prefix / prompt tuning: frozen base + adapter, loaded together

            base = AutoModelForCausalLM.from_pretrained(str(model_dir / BASE_DIR))
            self.model = PeftModel.from_pretrained(base, str(model_dir / ADAPTER_DIR)).eval()
        else:
            self.model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        self.batch_size = batch_size

    def encode(self, prompts: list[Prompt], responses: list[str]) -> list[dict[str, list]]:
        s = self.settings
        pairs = zip(prompts, responses, strict=True)
        return [encode_example(self.tokenizer, p, r, s.prompt_template, s.max_length) for p, r in pairs]

    def response_nll(self, prompts: list[Prompt], responses: list[str]) -> tuple[list[float], list[int]]:
        """Per-example summed NLL and token count of the responses (in input order)."""
        encoded = self.encode(prompts, responses)
        batches = [pad_batch(encoded[i:i + self.batch_size], self.tokenizer.pad_token_id)
                   for i in range(0, len(encoded), self.batch_size)]
        return response_nll(self.model, batches)

    def generate(self, prompts: list[Prompt]) -> list[str]:
        """Greedy responses, up to ``max_new_tokens`` each; batches are length-sorted and left-padded."""
        tok, s = self.tokenizer, self.settings
        rendered = [render_prompt(tok, p, s.prompt_template) for p in prompts]
        order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))
        out: list[str] = [""] * len(rendered)
        side, tok.padding_side = tok.padding_side, "left"
        try:
            with self.torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    enc = tok([rendered[i] for i in idx], padding=True, truncation=True,
                              max_length=max(s.max_length - s.max_new_tokens, 1), return_tensors="pt")
                    enc = {k: v.to(next(self.model.parameters()).device) for k, v in enc.items()}
                    generated = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=False,
                                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                    new = generated[:, enc["input_ids"].shape[1]:]
                    for j, i in enumerate(idx):
                        out[i] = tok.decode(new[j], skip_special_tokens=True).strip()
        finally:
            tok.padding_side = side
        return out
