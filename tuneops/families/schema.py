"""What a task family adds to the config, and the registry of families: a leaf module.

The config schema (tuneops/config.py) is assembled from the families: each family's folder declares, in
its ``config.py``, the fields it adds to the shared sections (``data.prompt_column`` is causal_lm's, added
to ``data:``), the top-level sections it owns (``preference:``), the gate metrics it scores, its defaults
and its cross-field rules; :class:`FamilyConfig` holds them. :class:`tuneops.families.TaskFamily` extends
it with the lifecycle (contract, training plan, evaluation, packaging, monitoring).

This module imports no other tuneops module, so the config, the families and the base-model checks all
import it without importing each other. Being a module of the ``tuneops.families`` package, importing it
imports that package first, which imports every family folder (each registers itself): :data:`FAMILIES`
is complete for any module outside the package that has imported this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

Config = Any
"""The validated tuneops.config.TuneopsConfig, as a family's rules read it. Its sections are assembled from
every family's fields when tuneops/config.py is imported, so their attributes are not known statically (and
tuneops.config imports this module, so it is not imported here)."""

SHARED_SECTIONS = ("data", "validation", "model", "gate", "serving", "monitoring.thresholds")
"""The sections of the config a family may add fields to (``monitoring.thresholds``: the drift thresholds)."""


class Section(BaseModel):
    """Base of every section of the config: unknown keys are errors; assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Metric:
    """A gate metric a family scores (``gate.primary_metric``, ``gate.floors``, ``gate.also_compare``)."""

    name: str
    description: str
    per_example: bool = False
    """The mean of a per-example score column of the predictions: the gate resamples that column."""
    bounded: bool = True
    """Within [0, 1], so it may have a floor (gate.floors)."""
    correctness: bool = False
    """The share of correct examples, so McNemar's test (gate.test: mcnemar) applies to it."""


@dataclass(frozen=True)
class OwnSection:
    """A top-level section a family owns (``preference:``): null unless the config is of that family."""

    model: type[Section]
    description: str


@dataclass(frozen=True)
class Refusal:
    """How a family words the refusal of some settings it does not use, instead of one generic line each:
    the settings given are named, then the reason (e.g. "set but model.task language_modeling reads one text
    column and no labels; remove them")."""

    settings: tuple[str, ...]
    """Dotted paths (``data.select_labels``) of settings of other families."""
    reason: str
    """What follows the settings' names; ``{task}`` stands for the config's model.task."""

    def message(self, given: list[str], task: str) -> str:
        return f"{', '.join(s for s in self.settings if s in given)} {self.reason.replace('{task}', task)}"


def _no_problems(cfg: Config) -> list[str]:
    return []


def _no_objection(config: dict[str, Any]) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class FamilyConfig:
    """What one task family adds to the config, and the rules it checks there (every problem at once)."""

    name: str
    """The value of ``model.task``."""
    summary: str
    fields: Mapping[str, tuple[type[Section], ...]] = field(default_factory=dict)
    """Per shared section (``data``, ``model``, ``monitoring.thresholds``, ...: :data:`SHARED_SECTIONS`), the
    Section classes whose fields this family adds to it. Only this family acts on them; a class two families
    list (causal_lm's generation settings, which preference uses too) belongs to both. The field names of
    different families' classes must differ."""
    sections: Mapping[str, OwnSection] = field(default_factory=dict)
    """Top-level sections of this family's own, by name (``preference``)."""
    metrics: tuple[Metric, ...] = ()
    """The gate metrics this family scores (its primary metric among them)."""
    gate_defaults: dict[str, Any] = field(default_factory=dict)
    """Gate settings this family uses unless the config sets them (e.g. the primary metric)."""
    training_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Training settings this family uses unless the config sets them: ``"*"`` for every method (its ``method``
    key is the family's default method), a method's own entry (its learning rate, ...) over it. Chosen from
    measurements (the README's defaults study)."""
    config_problems: Callable[[Config], list[str]] = _no_problems
    """Cross-field rules of the whole config for this family; every problem is returned (all at once). The
    settings of other families need no rule: the config refuses them by name (:func:`foreign_settings`)."""
    refusals: tuple[Refusal, ...] = ()
    """This family's own wording for refusing some settings of other families (else one generic line each)."""
    not_training: tuple[str, ...] = ()
    """Settings of this family (dotted paths) that do not change what is trained (e.g. how many tokens evaluation
    generates): the checkpoint resume key leaves them out (tuneops.config.TuneopsConfig.training_fingerprint)."""
    split_data: Callable[[Config], Any] = lambda cfg: cfg.data
    """The data section as the split sees it: ``text_column`` keys a row, ``label_column`` is its target."""
    accepts: Callable[[dict[str, Any]], str | None] = _no_objection
    """Given a base model's config.json, why this family cannot train it (None: it can)."""

    def settings(self) -> set[str]:
        """Dotted paths of every setting this family adds: its fields in the shared sections, its own sections."""
        return {f"{path}.{name}" for path, classes in self.fields.items() for cls in classes
                for name in cls.model_fields} | set(self.sections)


FAMILIES: dict[str, FamilyConfig] = {}
"""Every registered family by name (tuneops.families.register adds the full TaskFamily)."""


def owners(setting: str) -> list[str]:
    """The registered families that act on a family setting (a dotted path), in registration order."""
    return [name for name, family in FAMILIES.items() if setting in family.settings()]


def _default(family: FamilyConfig, setting: str) -> Any:
    path, _, name = setting.rpartition(".")
    if not path:
        return None  # an own section: null unless given
    cls = next(c for c in family.fields[path] if name in c.model_fields)
    return cls.model_fields[name].get_default(call_default_factory=True)


def foreign_settings(cfg: Config) -> dict[str, list[str]]:
    """The settings of other families that the config gives, each with the families that act on it.

    A setting counts as given when its value differs from its default: the default, written out or not, does
    nothing in any family, and a config dumped with every field (as tuneops records and reloads configs) is
    not refused for the fields of the families it is not of.
    """
    task = cfg.model.task
    mine = FAMILIES[task].settings() if task in FAMILIES else set()
    found: dict[str, list[str]] = {}
    for family in FAMILIES.values():
        for setting in sorted(family.settings() - mine - set(found)):
            value: Any = cfg
            for part in setting.split("."):
                value = getattr(value, part)
            if value != _default(family, setting):
                found[setting] = owners(setting)
    return found
