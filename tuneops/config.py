"""The one typed configuration of a tuneops pipeline, assembled from the shared sections and the task families.

A YAML file is read once, at the edge (CLI or flow parameter), into :class:`TuneopsConfig`; everything
downstream receives typed objects. ``extra="forbid"`` makes a typo an error, every field carries a
description (the Prefect UI shows it in the run form), and cross-field rules live in validators next to
the fields they relate. All problems are collected and reported at once by :func:`load_config` as a
:class:`ConfigError` naming each field.

The sections every family shares are in tuneops/sections.py. Each task family adds its own fields to them,
and its own sections (tuneops/families/<name>/config.py: :class:`tuneops.families.schema.FamilyConfig`), as
each method adds ``training.<method>``; the YAML keys stay where users write them (``data.prompt_column``
under ``data:``), and adding a family is adding a folder. A setting of a family other than the config's
(``model.task``) is refused by name, not accepted and ignored.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import pkgutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

import tuneops.families.schema as schema
from tuneops.errors import ConfigError
from tuneops.families.schema import FAMILIES, FamilyConfig, Metric, Section, foreign_settings
from tuneops.methods import METHODS
from tuneops.sections import (
    DEFAULT_TASK,
    AlertChannel,
    AlertsConfig,
    DistributedSettings,
    RegistryConfig,
    RetrainConfig,
    SearchConfig,
    SharedData,
    SharedGate,
    SharedModel,
    SharedMonitoring,
    SharedServing,
    SharedThresholds,
    SharedValidation,
    SplitConfig,
    TrainingConfig,
    _TrainingBase,
)

__all__ = ["SCORED_METRICS", "AlertChannel", "AlertsConfig", "ConfigError", "DataConfig", "DistributedSettings",
           "DriftThresholds", "GateConfig", "ModelConfig", "MonitoringConfig", "RegistryConfig", "RetrainConfig",
           "SearchConfig", "ServingConfig", "SplitConfig", "TrainingConfig", "TuneopsConfig", "ValidationSettings",
           "apply_overrides", "load_config", "validate_config"]


def _families() -> list[FamilyConfig]:
    """Every family, each a folder of tuneops/families/ (importing tuneops.families.schema imported them all)."""
    folders = {m.name for m in pkgutil.iter_modules([str(Path(schema.__file__).parent)]) if m.ispkg}
    missing = sorted(folders - set(FAMILIES))
    if missing:
        raise ImportError(f"tuneops.config was imported before the task families {', '.join(missing)} registered: a "
                          "family module imports something that imports tuneops.config at module level; import it "
                          "inside the function that needs it")
    return list(FAMILIES.values())


def _section(name: str, shared: type[Section], path: str, **fields: Any) -> Any:
    """A shared section: its own fields, then those every family adds to it (``FamilyConfig.fields[path]``)."""
    added = list(dict.fromkeys(cls for family in _families() for cls in family.fields.get(path, ())))
    declared = dict.fromkeys(shared.model_fields, shared.__name__)
    for cls in added:
        for field in cls.model_fields:
            if field in declared:
                raise TypeError(f"{path}.{field} is declared by both {declared[field]} and {cls.__name__}: one class "
                                "declares a field, and every family that acts on it lists that class")
            declared[field] = cls.__name__
    return create_model(name, __base__=(*reversed(added), shared), __doc__=shared.__doc__, __module__=__name__,
                        **fields)


def _metrics() -> dict[str, tuple[Metric, str]]:
    """Every family's gate metrics, each with the first family that lists it (preference lists causal_lm's too)."""
    found: dict[str, tuple[Metric, str]] = {}
    for family in _families():
        for metric in family.metrics:
            found.setdefault(metric.name, (metric, family.name))
    return found


_METRICS = _metrics()
SCORED_METRICS = tuple(name for name, (m, _) in _METRICS.items() if m.per_example)
"""Metrics that are the mean of a per-example score column of the predictions (the gate resamples them)."""
_BY_FAMILY = {f.name: [m.description for m, owner in _METRICS.values() if owner == f.name] for f in _families()}

DataConfig = _section("DataConfig", SharedData, "data")
ValidationSettings = _section("ValidationSettings", SharedValidation, "validation")
ModelConfig = _section("ModelConfig", SharedModel, "model")
GateConfig = _section("GateConfig", SharedGate, "gate", primary_metric=(Literal[tuple(_METRICS)], Field(
    FAMILIES[DEFAULT_TASK].gate_defaults["primary_metric"],
    description="Metric compared between challenger and champion; each family defaults to its own "
    "(TaskFamily.gate_defaults) and accepts its own: " + "; ".join(
        f"{', '.join(found)} for {name}" for name, found in _BY_FAMILY.items() if found) + ".")))
DriftThresholds = _section("DriftThresholds", SharedThresholds, "monitoring.thresholds")
MonitoringConfig = _section("MonitoringConfig", SharedMonitoring, "monitoring", thresholds=(
    DriftThresholds, Field(default_factory=DriftThresholds, description="Per-signal thresholds.")))
ServingConfig = _section("ServingConfig", SharedServing, "serving")

REFUSED, FAMILY_RULE = "refused", "family_rule"
"""Error types of a setting of another family, and of a rule of the config's family (their messages name the
settings, so they are shown as they are)."""
RESUME_SECTIONS = ("data", "split", "model", "training")
"""What shapes training, so what the checkpoint resume key hashes (:meth:`TuneopsConfig.training_fingerprint`),
with the config's family's own sections and gate.primary_metric (it selects the best epoch)."""
NOT_TRAINING = {"training": {"checkpoint_uri": True, "export_tolerance": True,
                             "distributed": {"timeout_minutes": True}}}
"""Training settings that do not change what is trained: where checkpoints are mirrored, the export check's
tolerance, how long a launch may run (raise it, re-run, and the killed run resumes)."""


def _whose(families: list[str]) -> str:
    """'the classification family's', 'the causal_lm and preference families''."""
    if len(families) == 1:
        return f"the {families[0]} family's"
    return f"the {', '.join(families[:-1])} and {families[-1]} families'"


def _error(kind: str, loc: tuple[str, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=value)


class _Pipeline(Section):
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
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig,
                                         description="Production drift monitoring, alerts and retraining.")
    serving: ServingConfig = Field(default_factory=ServingConfig,
                                   description="How a registered model serves and scores: `tuneops serve` (HTTP "
                                   "endpoint, micro-batching, request limits), the inference runtime and its "
                                   "agreement check, scoring chunk sizes.")

    @model_validator(mode="after")
    def _time_split(self) -> Any:
        if self.split.strategy == "time" and not self.data.timestamp_column:
            raise ValueError("split.strategy is 'time' but data.timestamp_column is not set; name the column")
        return self

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Gate settings the task family sets unless the config does (e.g. rouge_l for causal_lm), filled in
        before validation so that a validated config is never changed afterwards."""
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        family = FAMILIES.get(model.get("task", DEFAULT_TASK) if isinstance(model, dict) else DEFAULT_TASK)
        gate = data.get("gate") if data.get("gate") is not None else {}
        training = data.get("training") if data.get("training") is not None else {}
        if family is None or not isinstance(gate, dict) or not isinstance(training, dict):
            return data  # an unknown task or a malformed section is reported by validation
        return {**data, "gate": {**family.gate_defaults, **gate},
                "training": {**_training_defaults(family.training_defaults, training), **training}}

    @model_validator(mode="after")
    def _task_family(self, info: ValidationInfo) -> Any:
        """The rules of the config's family, and every setting of another family refused by name (each its own
        problem, with the families it belongs to), unless the config is one tuneops recorded (validation context
        ``recorded``): a version registered before a setting was refused still loads."""
        task = self.model.task
        family = FAMILIES[task]
        errors = [_error(FAMILY_RULE, (), problem, task) for problem in family.config_problems(self)]
        foreign = {} if (info.context or {}).get("recorded") else foreign_settings(self)
        worded = set()
        for refusal in family.refusals:
            given = [s for s in refusal.settings if s in foreign]
            if given:
                errors.append(_error(REFUSED, (), refusal.message(given, task), task))
                worded |= set(given)
        order = list(type(self).model_fields)
        for setting in sorted(set(foreign) - worded, key=lambda s: (order.index(s.split(".")[0]), s)):
            owners = foreign[setting]
            if "." in setting:
                message = (f"{setting} set but model.task is '{task}': the {task} family does not use this setting "
                           f"(it is {_whose(owners)}); remove it")
            else:
                message = (f"{setting} settings given but model.task is '{task}': the {task} family does not use "
                           f"this section (it is {_whose(owners)}); remove them"
                           + (f" or set model.task: {owners[0]}" if len(owners) == 1 else ""))
            errors.append(_error(REFUSED, tuple(setting.split(".")), message, task))
        if errors:
            raise ValidationError.from_exception_data("TuneopsConfig", errors)
        return self

    def split_data(self) -> DataConfig:
        """The data section as the split sees it: the task family says which column keys a row and which is its
        target (a classifier: text and label; a causal LM: prompt and response)."""
        return FAMILIES[self.model.task].split_data(self)

    def fingerprint(self) -> str:
        """Hash of the resolved config: two runs with the same hash were configured identically."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def training_fingerprint(self) -> str:
        """Hash of what shapes training: the checkpoint resume key's (tuneops.training.trainer.checkpoint_key).

        Data, split, model and training (but for :data:`NOT_TRAINING`), the family's own sections (preference's
        DPO settings, language_modeling's masking) and gate.primary_metric, which selects the best epoch; not
        the family's settings that do not shape training (``FamilyConfig.not_training``: how answers are generated
        at evaluation), nor the fields of other families (they are at their defaults, and a family added later
        does not change the key). The gate's other rules, the registry, monitoring, serving and search do not
        change what is trained: changing them keeps the checkpoints of an interrupted run. The validation policies
        change the rows (dropped, redacted), which the split files' fingerprints beside this hash already cover.
        """
        family = FAMILIES[self.model.task]
        dumped = self.model_dump(mode="json", include={*RESUME_SECTIONS, *family.sections}, exclude=NOT_TRAINING)
        others = {s for f in FAMILIES.values() for s in f.settings()} - family.settings()
        for setting in others | set(family.not_training):
            *parents, name = setting.split(".")
            node: Any = dumped
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(name, None)
        dumped["gate"] = {"primary_metric": self.gate.primary_metric}
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


TuneopsConfig = create_model(
    "TuneopsConfig", __base__=_Pipeline, __doc__=_Pipeline.__doc__, __module__=__name__,
    **{name: (section.model | None, Field(None, description=section.description))
       for family in _families() for name, section in family.sections.items()})


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
    if error["type"] in (REFUSED, FAMILY_RULE):  # the message names its settings itself
        return error["msg"]
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


def validate_config(raw: dict[str, Any], source: str = "config", recorded: bool = False) -> TuneopsConfig:
    """Validate a raw mapping; raise one ConfigError listing every problem.

    ``recorded``: the config of a run tuneops recorded (a registered version's training config), whose settings
    of other families were accepted when it ran; they are kept, not refused."""
    try:
        return TuneopsConfig.model_validate(raw, context={"recorded": recorded})
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
