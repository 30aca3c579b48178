"""What a `tuneops serve` process serves and how (:class:`ServeSpec`): plain data, built once by the CLI from a config
and/or a model URI (:func:`build_spec`), and handed to uvicorn's worker processes as JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tuneops.errors import ConfigError

if TYPE_CHECKING:
    from tuneops.config import ServingConfig, TuneopsConfig

FOLLOWED_ALIAS = "champion"
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

    def settings(self) -> ServingConfig:
        from tuneops.config import ServingConfig

        return ServingConfig.model_validate(self.serving)

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
               version: str | None = None) -> ServeSpec:
    """The one description of what to serve, from a config and/or a model URI (the URI wins over the config's
    ``registry.model_name``); ``--version`` pins a version, else the ``champion`` alias is followed."""
    if cfg is None and model_uri is None:
        raise ConfigError("tuneops serve needs --config CONFIG (serves its registry.model_name's champion) or "
                          "--model-uri URI (e.g. models:/banking77-intent@champion)")
    name, alias, plain_uri = None, FOLLOWED_ALIAS, None
    if model_uri is not None:
        match = _MODEL_URI.match(model_uri)
        if match is None:  # runs:/..., a folder: one fixed model, nothing to follow
            if version is not None:
                raise ConfigError(f"--version {version} only applies to a registered model; {model_uri} is not a "
                                  "models:/NAME@ALIAS URI")
            plain_uri, alias = model_uri, None
        else:
            name, alias = match["name"], match["alias"]
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
                     config=cfg.model_dump(mode="json") if cfg is not None else None)

