"""The serving file: one small YAML that lists the models one `tuneops serve` process serves (:class:`ServingFile`),
read and checked all at once (:func:`read`), and what a `tuneops serve` command line asks for, whichever way it
names its models (:func:`requests_from`).

.. code-block:: yaml

    port: 8080                  # host, port, workers: the process's (the command line's flags win)
    models:
      - config: banking77_lora.yaml         # relative to this file's folder
      - config: nlupp_intents.yaml
        version: 3                          # pinned (else the alias is followed)
      - config: support_router.yaml
        alias: challenger                   # follow another alias than champion
        runtime: onnx                       # this model's serving.runtime instead of its config's

Each model keeps its own config's ``serving`` section (runtime, batching, request limits, prediction log); its
name, and so its route ``/models/NAME/invocations``, is the config's ``registry.model_name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneops.errors import ConfigError, TuneopsError
from tuneops.serving.spec import ModelRequest, request_for


class ModelEntry(BaseModel):
    """One model of a serving file."""

    model_config = ConfigDict(extra="forbid")

    config: str = Field(min_length=1, description="The model's tuneops config (its registry.model_name is served, "
                        "with its serving section); a relative path is relative to the serving file's folder.")
    version: str | None = Field(None, description="Serve this registered version, pinned, instead of following the "
                                "alias.")
    alias: str | None = Field(None, min_length=1, description="The alias followed (default champion): its moves are "
                              "swapped in.")
    runtime: str | None = Field(None, min_length=1, description="serving.runtime for this model instead of its "
                                "config's (fp32, int8, onnx, bf16, auto).")

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or (value is not None and not str(value).isdigit()):
            raise ValueError(f"a version is a registered version number such as 3, not {value!r}")
        return None if value is None else str(value)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str | None) -> str | None:
        from tuneops.serving.runtimes import AUTO, RUNTIMES

        if value is not None and value != AUTO and value not in RUNTIMES:
            raise ValueError(f"unknown runtime '{value}'; known: {', '.join([*RUNTIMES, AUTO])}")
        return value

    @model_validator(mode="after")
    def _pinned_or_followed(self) -> ModelEntry:
        if self.version is not None and self.alias is not None:
            raise ValueError(f"version {self.version} pins the model and alias {self.alias} follows one; give one of "
                             "them")
        return self


class ServingFile(BaseModel):
    """What one `tuneops serve --serving-file FILE` process serves."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, min_length=1, description="Address to bind (--host wins); default: the configs' "
                             "serving.host, which must agree, else 127.0.0.1.")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port (--port wins); default: the configs' "
                             "serving.port, which must agree, else 8080.")
    workers: int | None = Field(None, ge=1, le=64, description="Server processes, each serving every model "
                                "(--workers wins); default: the configs' serving.workers, which must agree, else 1.")
    models: list[ModelEntry] = Field(min_length=1, description="The models served, each at /models/NAME/invocations.")


def _where(loc: tuple[Any, ...]) -> str:
    """``models[1].alias`` for pydantic's ``("models", 1, "alias")``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def _problems(path: Path, problems: list[str]) -> ConfigError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return ConfigError(f"serving file {path} has {len(problems)} problem{'s' * (len(problems) > 1)}:\n{lines}\n"
                       "Fix these entries (the serving file is described in docs/reference/serving-file.md).")


def parse(raw: Any, path: Path) -> ServingFile:
    """Validate a serving file's contents; one ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise _problems(path, [f"it must hold a mapping with a 'models' list, not {type(raw).__name__}"])
    try:
        return ServingFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = _where(e["loc"])
            if e["type"] == "extra_forbidden":
                known = ModelEntry.model_fields if len(e["loc"]) > 1 else ServingFile.model_fields
                problems.append(f"{where}: unknown field (known: {', '.join(known)})")
            elif e["type"] == "missing":
                problems.append(f"{where}: required field is missing")
            else:
                shown = "" if e["type"] == "value_error" else f" (got {e['input']!r})"
                problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}{shown}")
        raise _problems(path, problems) from None


def read(path: str | Path, overrides: list[str] | None = None) -> tuple[list[ModelRequest], dict[str, Any]]:
    """The models a serving file lists, each with its config loaded (``--set`` overrides applied to every config),
    and the per-process settings it gives. Every problem of the file and of its configs is reported at once."""
    from tuneops.config import load_config

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"serving file {path} does not exist; pass a YAML file listing the models, e.g. "
                          "'models: [{config: configs/banking77_lora.yaml}]'")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"serving file {path} is not valid YAML: {exc}") from None
    served = parse(raw, path)
    requests, problems = [], []
    for i, entry in enumerate(served.models):
        config = Path(entry.config) if Path(entry.config).is_absolute() else path.parent / entry.config
        try:
            cfg = load_config(config, overrides)
        except TuneopsError as exc:
            problems.append(f"models[{i}].config {entry.config}: {exc}")
            continue
        requests.append(request_for(f"models[{i}].config {entry.config}", cfg, version=entry.version,
                                    alias=entry.alias, runtime=entry.runtime))
    if problems:
        raise _problems(path, problems)
    return requests, served.model_dump(include={"host", "port", "workers"}, exclude_none=True)


def requests_from(configs: list[str] | None, serving_file: str | None, overrides: list[str], model_uri: str | None,
                  version: str | None) -> tuple[list[ModelRequest], dict[str, Any] | None, str]:
    """What a `tuneops serve` command line asks for: the models (one ``--config`` and/or ``--model-uri`` as ever,
    several ``--config``, or a serving file), the serving file's per-process settings (None without one) and how
    messages name the file. Options that only make sense for one model are refused with several."""
    from tuneops.config import load_config

    configs = configs or []
    if serving_file is not None:
        clash = [flag for flag, given in (("--config", configs), ("--model-uri", model_uri), ("--version", version))
                 if given]
        if clash:
            raise ConfigError(f"--serving-file lists the models itself; drop {', '.join(clash)} (pin a version with "
                              "'version: N' in the file's entry, add a model as an entry of its own)")
        requests, values = read(serving_file, overrides)
        return requests, values, f"serving file {serving_file}"
    if len(configs) > 1:
        clash = [flag for flag, given in (("--model-uri", model_uri), ("--version", version)) if given]
        if clash:
            raise ConfigError(f"{' and '.join(clash)} name one model, and {len(configs)} configs are given; serve "
                              "them from a serving file to pin a version per model ('version: N' in its entry)")
        loaded, problems = [], []
        for config in configs:
            try:
                loaded.append(load_config(config, overrides))
            except TuneopsError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))
        return [request_for(config, cfg) for config, cfg in zip(configs, loaded, strict=True)], None, ""
    if not configs and model_uri is None:
        raise TuneopsError("tuneops serve needs --config CONFIG (serves its registry.model_name's champion), "
                           "--serving-file FILE (several models) or --model-uri URI (e.g. "
                           "models:/banking77-intent@champion)")
    cfg = load_config(configs[0], overrides) if configs else None
    if cfg is None and overrides:
        raise TuneopsError("--set needs --config (it overrides a config's values)")
    return [request_for(configs[0] if configs else str(model_uri), cfg, model_uri=model_uri, version=version)], None, ""
