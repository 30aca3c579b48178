"""The causal-LM (instruction tuning) prediction path: prompt rendering, loss masking, generation, metrics.

One module so training, evaluation, export verification and the registered pyfunc render a prompt
the same way: through the tokenizer's chat template when it has one, else through
``model.prompt_template``. A training example is ``prompt tokens + response tokens + EOS`` with the
prompt tokens' labels set to -100, so the loss (and perplexity) is over the response only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

_log = logging.getLogger("tuneops.families.causal_lm.generation")
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


def parse_label_list(text: str) -> list[str] | None:
    """The labels of an answer that should be a JSON list of strings; None when it is not one."""
    try:
        value = json.loads(str(text).strip())
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        return None
    return [str(v).strip() for v in value]


def label_set_scores(prediction: str, reference: str) -> dict[str, float]:
    """Per-example scores of a JSON-list answer: valid JSON, exact set match, and the set's TP / FP / FN."""
    got, want = parse_label_list(prediction), set(parse_label_list(reference) or [])
    predicted = set(got or [])
    return {"json_valid": float(got is not None), "set_match": float(got is not None and predicted == want),
            "tp": float(len(predicted & want)), "fp": float(len(predicted - want)), "fn": float(len(want - predicted))}


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


def render_prompt(tokenizer: Any, prompt: Prompt, template: str, system: str | None = None) -> str:
    """The text the model sees before its response: chat template if the tokenizer has one, else ``template``.

    ``system`` (model.system_prompt) opens a text prompt as a system message, replacing the chat
    template's default one (SmolLM2's spends about 20 tokens per example on it); a conversation
    keeps its own messages.
    """
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if system and not isinstance(prompt, list):
        messages = [{"role": "system", "content": system}, *messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    rendered = template.format(prompt=text)
    return f"{system}\n\n{rendered}" if system and not isinstance(prompt, list) else rendered


def ensure_pad_token(tokenizer: Any) -> None:
    """Many causal LMs ship without a pad token; padding then reuses EOS (masked out by attention and labels)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def encode_example(tokenizer: Any, prompt: Prompt, response: str, template: str, max_length: int,
                   system: str | None = None) -> dict[str, list]:
    """Token ids of prompt + response + EOS, labels -100 on the prompt (loss on the response and EOS only).

    The prompt is tokenized on its own, exactly as generation will see it. Too long an example keeps
    its response (up to half of ``max_length``) and drops the start of the prompt.
    """
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt, template, system), add_special_tokens=True)["input_ids"]
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
    """What serving needs besides weights and tokenizer: the template, the length limits, stop strings, precision.

    Saved beside the exported weights (``tuneops_generation.json``); fields added later have defaults,
    so older exports still load.
    """

    prompt_template: str
    max_length: int
    max_new_tokens: int
    system_prompt: str | None = None
    stop_strings: list[str] = field(default_factory=list)
    precision: str = "fp32"
    """'bf16' generates under autocast where the hardware computes bf16 (a GPU, or a CPU with AVX512-BF16/AMX)."""

    @classmethod
    def of(cls, cfg: Any) -> GenerationSettings:
        """The settings a config trains and serves with (model.*, and training.precision for bf16)."""
        m = cfg.model
        return cls(m.prompt_template, m.max_length, m.max_new_tokens, m.system_prompt, list(m.stop_strings),
                   "bf16" if cfg.training.precision == "bf16" else "fp32")

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / GENERATION_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> GenerationSettings:
        return cls(**json.loads((Path(model_dir) / GENERATION_FILE).read_text()))


@dataclass
class Generated:
    """One generated answer with what the production log records about it."""

    response: str
    prompt_tokens: int
    response_tokens: int
    finish_reason: str
    """'stop': the model ended it (EOS or a stop string); 'length': cut off at max_new_tokens."""
    latency_ms: float
    """Wall time of the batch that generated it (its prompts are answered together)."""


GENERATED_COLUMNS = [f.name for f in fields(Generated)]  # what the registered pyfunc answers with, in order


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    at = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


@functools.cache
def _cpu_bf16() -> bool:
    """Whether bf16 autocast speeds this CPU up; said once per process when it does not."""
    from tuneops.training.precision import cpu_bf16_pays

    pays, why = cpu_bf16_pays()
    if not pays:
        _log.warning("bf16 generation: %s, so it generates in fp32", why)
    return pays


def _autocast(torch: Any, precision: str, device: Any) -> Any:
    """bf16 autocast where it computes in hardware; otherwise (and for fp32) a no-op context."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16) if _cpu_bf16() else contextlib.nullcontext()


class Generator:
    """A saved causal LM (merged weights, base + adapter, or an adapter-only version on its pinned base) with its
    tokenizer and settings.

    The one generation path: evaluation, export verification and the registered pyfunc use it.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 32, model: Any = None, tokenizer: Any = None,
                 settings: GenerationSettings | None = None, runtime: str = "fp32", merge: bool | None = None,
                 share_base: bool = False):
        """``merge`` and ``share_base`` as for :class:`tuneops.families.classification.predictor.Classifier`
        (:func:`tuneops.training.model_loading.load_saved_model`); a ``model`` given is used as it is."""
        import dataclasses

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tuneops.serving import runtimes
        from tuneops.training.model_loading import load_saved_model

        chosen = runtimes.usable(runtime, "causal LM", for_generation=True)

        self.torch = torch
        model_dir = Path(model_dir)
        self.settings = settings or GenerationSettings.load(model_dir)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
        ensure_pad_token(self.tokenizer)
        # A runtime that needs plain weights says so (``Runtime.merges``; without that field: all but the reference).
        self.merged = bool(getattr(chosen, "merges", chosen.name != runtimes.REFERENCE)) if merge is None else merge
        if model is not None:
            self.model = model.eval()
        else:
            self.model = load_saved_model(model_dir, AutoModelForCausalLM, merge=self.merged, share_base=share_base)
        self.batch_size = batch_size
        self.runtime = chosen.name
        if chosen.name != runtimes.REFERENCE:  # fp32 keeps the precision the model was exported with
            self.model, precision = chosen.generator(self.model)
            self.settings = dataclasses.replace(self.settings, precision=precision)

    def encode(self, prompts: list[Prompt], responses: list[str]) -> list[dict[str, list]]:
        s = self.settings
        pairs = zip(prompts, responses, strict=True)
        return [encode_example(self.tokenizer, p, r, s.prompt_template, s.max_length, s.system_prompt)
                for p, r in pairs]

    def response_nll(self, prompts: list[Prompt], responses: list[str]) -> tuple[list[float], list[int]]:
        """Per-example summed NLL and token count of the responses (in input order)."""
        encoded = self.encode(prompts, responses)
        batches = [pad_batch(encoded[i:i + self.batch_size], self.tokenizer.pad_token_id)
                   for i in range(0, len(encoded), self.batch_size)]
        return response_nll(self.model, batches)

    def generate(self, prompts: list[Prompt]) -> list[str]:
        """Greedy responses, up to ``max_new_tokens`` each (see :meth:`generate_details`)."""
        return [g.response for g in self.generate_details(prompts)]

    def generate_details(self, prompts: list[Prompt]) -> list[Generated]:
        """Greedy responses with token counts, finish reason and batch latency, in input order.

        Batches are length-sorted and left-padded. With stop strings a sequence stops at the first
        one (transformers' ``stop_strings``) and the answer is cut before it.
        """
        from tuneops.progress import Meter

        tok, s, torch = self.tokenizer, self.settings, self.torch
        rendered = [render_prompt(tok, p, s.prompt_template, s.system_prompt) for p in prompts]
        meter = Meter(len(rendered), "answers", lambda text: _log.info("generated %s", text))
        order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))
        out: list[Generated | None] = [None] * len(rendered)
        device = next(self.model.parameters()).device
        stop = {"stop_strings": list(s.stop_strings), "tokenizer": tok} if s.stop_strings else {}
        ends = {tok.eos_token_id, tok.pad_token_id}
        side, tok.padding_side = tok.padding_side, "left"
        try:
            with torch.inference_mode(), _autocast(torch, s.precision, device):
                for start in range(0, len(order), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    began = time.perf_counter()
                    enc = tok([rendered[i] for i in idx], padding=True, truncation=True,
                              max_length=max(s.max_length - s.max_new_tokens, 1), return_tensors="pt")
                    enc = {k: v.to(device) for k, v in enc.items()}
                    generated = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=False,
                                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                                    **stop)
                    new = generated[:, enc["input_ids"].shape[1]:].tolist()
                    latency = (time.perf_counter() - began) * 1000
                    for j, i in enumerate(idx):
                        ids = new[j]
                        n = next((k for k, t in enumerate(ids) if t in ends), len(ids))
                        text, stopped = cut_at_stop(tok.decode(ids[:n], skip_special_tokens=True), s.stop_strings)
                        out[i] = Generated(text.strip(), int(enc["attention_mask"][j].sum()), n,
                                           "stop" if stopped or n < s.max_new_tokens else "length",
                                           round(latency, 3))
                    meter(start + len(idx))  # about every 10 s on long inputs: answers done, rate, time left
        finally:
            tok.padding_side = side
        return out  # type: ignore[return-value]  # every index is filled above
