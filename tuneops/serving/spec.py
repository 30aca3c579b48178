"""What a `tuneops serve` process serves and how (:class:`ServeSpec`, one per model): plain data, built once by the CLI
from a config and/or a model URI (:func:`build_spec`), or for several models from what each asks for
(:class:`ModelRequest`, :func:`build_specs`: the settings of the one process, host, port and workers, agreed on or
refused by name), and handed to uvicorn's worker processes as JSON (:func:`specs_to_json`)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tuneops.errors import ConfigError

if TYPE_CHECKING:
    from tuneops.config import ServingConfig, TuneopsConfig

FOLLOWED_ALIAS = "champion"
PER_PROCESS = ("host", "port", "workers")
"""The serving settings of the process, not of a model: one value whatever the number of models served."""
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ServeSpec:
    """What a server process serves and how: plain data, so it travels to worker processes as JSON."""

    model_name: str | None
    """Registered model name; None when serving a plain URI (a ``runs:/`` URI or a folder)."""
    alias: str | None
    """The alias followed (its moves are swapped in); None when the version is pinned."""
    version: str | None
    """The pinned version; None when following the alias."""
    model_uri: str | None
    """A URI outside the registry (``runs:/...``, a folder); None for a registered model."""
    serving: dict[str, Any]
    """The ``serving`` config section (CLI flags already applied)."""
    config: dict[str, Any] | None
    """The resolved config (``--config``), which a runtime other than fp32 needs for its agreement check."""
    log_output: str | None
    """Prediction-log folder or ``s3://`` prefix; None: online predictions are not logged."""
    share_base: bool = False
    """Load the pyfunc with ``model_config["share_base"]``: several models in one process share one copy of a base's
    weights (a pyfunc that does not know the key ignores it)."""

    def settings(self) -> ServingConfig:
        from tuneops.config import ServingConfig

        return ServingConfig.model_validate(self.serving)

    @property
    def route(self) -> str:
        """Where this model answers when several are served (``/invocations`` too when it is the only one)."""
        return f"/models/{self.model_name}/invocations" if self.model_name else "/invocations"

    def describe(self) -> str:
        if self.model_uri:
            return self.model_uri
        return f"models:/{self.model_name}@{self.alias}" if self.alias else f"models:/{self.model_name}/{self.version}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSpec:
        return cls(**json.loads(text))


def default_log_output(model_name: str) -> str:
    """Where online predictions go when monitoring.predictions is not set: ``$TUNEOPS_HOME/predictions/<name>``."""
    from tuneops import settings

    return str(settings.home() / "predictions" / model_name)


def build_spec(cfg: TuneopsConfig | None, serving: ServingConfig, model_uri: str | None = None,
               version: str | None = None, alias: str | None = None, share_base: bool = False) -> ServeSpec:
    """The one description of what to serve, from a config and/or a model URI (the URI wins over the config's
    ``registry.model_name``); ``--version`` pins a version, else ``alias`` (default ``champion``) is followed."""
    if cfg is None and model_uri is None:
        raise ConfigError("tuneops serve needs --config CONFIG (serves its registry.model_name's champion) or "
                          "--model-uri URI (e.g. models:/banking77-intent@champion)")
    name, plain_uri = None, None
    alias = alias or FOLLOWED_ALIAS
    if model_uri is not None:
        match = _MODEL_URI.match(model_uri)
        if match is None:  # runs:/..., a folder: one fixed model, nothing to follow
            if version is not None:
                raise ConfigError(f"--version {version} only applies to a registered model; {model_uri} is not a "
                                  "models:/NAME@ALIAS URI")
            plain_uri, alias = model_uri, None
        else:
            name, alias = match["name"], match["alias"] or alias
            if match["version"] is not None:
                if version is not None and version != match["version"]:
                    raise ConfigError(f"--version {version} contradicts {model_uri}; give one of them")
                version, alias = match["version"], None
    else:
        name = cfg.registry.model_name
    if version is not None:
        alias = None
    log_output = None
    if serving.log_predictions:
        configured = cfg.monitoring.predictions if cfg is not None else None
        log_output = configured or default_log_output(name or "model")
    return ServeSpec(model_name=name, alias=alias, version=str(version) if version is not None else None,
                     model_uri=plain_uri, serving=serving.model_dump(mode="json"), log_output=log_output,
                     config=cfg.model_dump(mode="json") if cfg is not None else None, share_base=share_base)



@dataclass(frozen=True)
class ModelRequest:
    """One model a `tuneops serve` command asks for: a config (``--config``, an entry of a serving file) and/or a
    model URI, with what may be pinned or changed for it."""

    source: str
    """Where it was asked for, as messages name it: the config's path (``models[1].config`` of a serving file)."""
    cfg: TuneopsConfig | None
    model_uri: str | None = None
    version: str | None = None
    alias: str | None = None
    """The alias to follow instead of ``champion``."""
    runtime: str | None = None
    """``serving.runtime`` for this model instead of its config's."""
    process: dict[str, Any] = field(default_factory=dict)
    """The per-process settings its config sets itself (:data:`PER_PROCESS`, from the config's ``serving`` section
    as written, not its defaults)."""


def request_for(source: str, cfg: TuneopsConfig | None, **pinned: Any) -> ModelRequest:
    """A :class:`ModelRequest` whose ``process`` holds what the config's serving section sets of host, port, workers."""
    given = cfg.serving.model_fields_set if cfg is not None else set()
    process = {k: getattr(cfg.serving, k) for k in PER_PROCESS if k in given} if cfg is not None else {}
    return ModelRequest(source=source, cfg=cfg, process=process, **pinned)


def process_settings(requests: list[ModelRequest], flags: dict[str, Any],
                     file_values: dict[str, Any] | None = None, file_label: str = "the serving file") -> dict[str, Any]:
    """The process's host, port and workers: a command-line flag wins, then the serving file, then what the configs
    set (they must agree: two configs that set different ports are refused, naming both); a setting nobody gives
    keeps its default. Checked by the serving section's rules, each problem naming where the value came from."""
    from pydantic import ValidationError

    from tuneops.config import ServingConfig

    chosen: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems = []
    for key in PER_PROCESS:
        if flags.get(key) is not None:
            chosen[key], origin[key] = flags[key], f"--{key}"
        elif (file_values or {}).get(key) is not None:
            chosen[key], origin[key] = file_values[key], f"{file_label}: {key}"
        else:
            given = {r.source: r.process[key] for r in requests if key in r.process}
            if len(set(given.values())) > 1:
                said = ", ".join(f"{source} sets {value!r}" for source, value in given.items())
                problems.append(f"serving.{key} differs between the models' configs ({said}) but one process has one "
                                f"{key}: give it once with --{key}" + (f" or '{key}:' in {file_label}"
                                                                        if file_values is not None else ""))
            elif given:
                source, value = next(iter(given.items()))
                chosen[key], origin[key] = value, f"serving.{key} of {source}"
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        ServingConfig.model_validate(chosen)
    except ValidationError as exc:
        raise ConfigError("; ".join(f"{origin.get(str(e['loc'][0]), e['loc'][0])} {e['input']!r}: {e['msg']}"
                                    for e in exc.errors())) from None
    return chosen


def build_specs(requests: list[ModelRequest], flags: dict[str, Any] | None = None,
                file_values: dict[str, Any] | None = None, file_label: str = "the serving file") -> list[ServeSpec]:
    """One :class:`ServeSpec` per requested model, for one process: each keeps its config's serving section (runtime,
    batching, request limits, prediction log), the per-process settings are :func:`process_settings`'. Two models
    under one name (their route) or writing one prediction log are refused by name; several models load with
    ``share_base`` (one copy of a base shared by the adapters on it)."""
    from pydantic import ValidationError

    from tuneops.config import ServingConfig

    if not requests:
        raise ConfigError("tuneops serve needs --config CONFIG (serves its registry.model_name's champion), "
                          "--serving-file FILE (several models) or --model-uri URI")
    process = process_settings(requests, flags or {}, file_values, file_label)
    several = len(requests) > 1
    specs = []
    for request in requests:
        serving = request.cfg.serving if request.cfg is not None else ServingConfig()
        changed = {**process, **({"runtime": request.runtime} if request.runtime is not None else {})}
        try:
            serving = ServingConfig.model_validate({**serving.model_dump(), **changed})
        except ValidationError as exc:  # only the runtime can be wrong here: the process settings were checked
            raise ConfigError(f"{request.source}: " + "; ".join(f"runtime {e['input']!r}: {e['msg']}"
                                                                 for e in exc.errors())) from None
        spec = build_spec(request.cfg, serving, model_uri=request.model_uri, version=request.version,
                          alias=request.alias, share_base=several)
        if several and spec.model_name is None:
            raise ConfigError(f"{request.source}: {spec.describe()} is not a registered model; several models in one "
                              "process are served by name (/models/NAME/invocations), so each must be a registered "
                              "model (a config's registry.model_name)")
        specs.append(spec)
    sources = [r.source for r in requests]
    problems = [f"{' and '.join(sources[i] for i in at)} both serve the model {what}"
                for what, at in _same(s.model_name for s in specs).items()]
    problems += [f"{' and '.join(sources[i] for i in at)} both write their prediction log to {where} (give each model "
                 "its own monitoring.predictions)" for where, at in _same(s.log_output for s in specs).items()]
    if problems:
        raise ConfigError("; ".join(problems) + ("; each model is served once, under its registry.model_name"
                                                 if any("serve the model" in p for p in problems) else ""))
    return specs


def _same(values: Any) -> dict[str, list[int]]:
    """Each value (None aside) that occurs more than once, with the positions it occurs at."""
    found: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        if value is not None:
            found.setdefault(value, []).append(i)
    return {value: at for value, at in found.items() if len(at) > 1}


def specs_to_json(specs: list[ServeSpec]) -> str:
    return json.dumps([asdict(s) for s in specs])


def specs_from_json(text: str) -> list[ServeSpec]:
    loaded = json.loads(text)
    return [ServeSpec(**item) for item in (loaded if isinstance(loaded, list) else [loaded])]
