"""The documentation cannot drift from the code: every config snippet in docs/ and the README validates against the
schema, the generated configuration reference lists every field of the schema, the generated CLI reference every
command and option, and the README stays a short entry point whose links resolve."""

from __future__ import annotations

import argparse
import importlib.util
import re
import textwrap
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tests.conftest import ROOT
from tuneops.cli import build_parser
from tuneops.config import TuneopsConfig, validate_config

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README = ROOT / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
FRAGMENT = re.compile(r"^#\s*fragment of (?P<config>configs/\S+\.ya?ml)\s*$")
SECTIONS = set(TuneopsConfig.model_fields)


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()


def yaml_snippets() -> list[tuple[str, str]]:
    """(file:line, text) of every ```yaml block of the docs and the README."""
    found = []
    for path in [README, *PAGES]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match["lang"].lower() in ("yaml", "yml"):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", textwrap.dedent(match["body"])))
    return found


SNIPPETS = yaml_snippets()


def _merge(base: dict, part: dict) -> dict:
    out = dict(base)
    for key, value in part.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_the_snippets_are_found():
    where = {name.split(":")[0] for name, _ in SNIPPETS}
    assert "README.md" in where and len(SNIPPETS) >= 4, where


@pytest.mark.parametrize("name, text", SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_every_config_snippet_validates_against_the_schema(name, text, monkeypatch):
    """A block with a top-level `data:` section is a whole config; a block that opens with `# fragment of
    configs/NAME.yaml` is merged into that shipped config; any other block made only of config sections must be
    marked as one of the two (docs/development.md, "The documentation")."""
    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load(text)
    fragment = FRAGMENT.match(text.lstrip().splitlines()[0]) if text.strip() else None
    if fragment:
        shipped = yaml.safe_load((ROOT / fragment["config"]).read_text())
        assert isinstance(raw, dict), f"{name}: a fragment must be a mapping of config sections"
        validate_config(_merge(shipped, raw), source=f"{name} (merged into {fragment['config']})")
    elif isinstance(raw, dict) and "data" in raw:
        validate_config(raw, source=name)
    elif isinstance(raw, dict) and raw and set(raw) <= SECTIONS:
        pytest.fail(f"{name} holds config sections ({', '.join(raw)}) but no data section; start it with "
                    "'# fragment of configs/NAME.yaml' so it is checked against a shipped config")


def test_a_bad_snippet_would_fail():
    """The snippet test has teeth: a typo in a documented key is a ConfigError."""
    from tuneops.errors import ConfigError

    name, text = next((n, t) for n, t in SNIPPETS if n.startswith("README.md"))
    raw = yaml.safe_load(text)
    raw["data"]["labl_column"] = raw["data"].pop("label_column")
    with pytest.raises(ConfigError, match="labl_column"):
        validate_config(raw, source=name)


def test_a_bad_fragment_would_fail():
    from tuneops.errors import ConfigError

    shipped = yaml.safe_load((ROOT / "configs/banking77_lora.yaml").read_text())
    with pytest.raises(ConfigError, match="serving.max_batch_sise"):
        validate_config(_merge(shipped, {"serving": {"max_batch_sise": 16}}))


# --------------------------------------------------------------------------- the configuration reference


def schema_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every field of the schema by dotted name; the fields of a list's items as `name[].field`."""

    def models(annotation) -> list[tuple[type[BaseModel], bool]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [(annotation, False)]
        is_list = typing.get_origin(annotation) is list
        return [(m, is_list or listed) for arg in typing.get_args(annotation) for m, listed in models(arg)]

    fields = {}
    for name, field in model.model_fields.items():
        dotted = prefix + name
        fields[dotted] = field
        for sub, listed in models(field.annotation):
            fields.update(schema_fields(sub, dotted + ("[]" if listed else "") + "."))
    return fields


def test_the_configuration_reference_lists_every_field_of_the_schema():
    page = (DOCS / "reference/configuration.md").read_text()
    assert HOOKS.CONFIG_MARKER in page
    schema_part = HOOKS.config_reference().split("## Task family defaults")[0]
    rows = {line.split(" | ")[0].removeprefix("| ").strip("`"): line
            for line in schema_part.splitlines() if line.startswith("| `")}
    fields = schema_fields(TuneopsConfig)
    assert {"data.path", "training.lora.r", "training.bottleneck.placement", "monitoring.alerts.channels[].kind",
            "serving.runtime"} <= set(fields)
    missing = [name for name in fields if name not in rows]
    assert not missing, f"not in the generated configuration reference: {missing}"
    undescribed = [name for name, field in fields.items() if HOOKS.inline(field.description or "") not in rows[name]]
    assert not undescribed, f"listed without the schema's description: {undescribed}"


def test_the_configuration_reference_shows_types_defaults_and_descriptions():
    reference = HOOKS.config_reference()
    row = next(line for line in reference.splitlines() if line.startswith("| `training.lora.r` |"))
    assert "`int`" in row and "`16`" in row and "rank" in row.lower()
    row = next(line for line in reference.splitlines() if line.startswith("| `data.path` |"))
    assert "**required**" in row
    assert "## Task family defaults" in reference and "`method: full`" in reference


# --------------------------------------------------------------------------- the CLI reference


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: sub for action in actions for name, sub in action.choices.items()}


def test_the_cli_reference_lists_every_command_and_option():
    page = (DOCS / "reference/cli.md").read_text()
    assert HOOKS.CLI_MARKER in page
    reference = HOOKS.cli_reference()
    commands = _subcommands(build_parser())
    assert {"train", "predict", "serve", "promote", "monitor"} <= set(commands)
    sections = re.split(r"^### ", reference, flags=re.MULTILINE)
    for name, sub in commands.items():
        section = next((s for s in sections if s.startswith(f"`tuneops {name}`")), None)
        assert section is not None, f"tuneops {name} has no section in the CLI reference"
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help", "-v", "--verbose"):
                    assert f"`{option}" in section, f"tuneops {name} {option}"
            if not action.option_strings:
                assert f"`{action.dest}`" in section, f"tuneops {name} {action.dest}"


def test_the_hook_generates_the_pages_in_a_separate_process():
    """MkDocs runs the hook; tuneops is imported in a child process so that its quiet console does not swallow
    the warnings `mkdocs build --strict` fails on."""
    assert HOOKS.generate(HOOKS.CLI_MARKER) == HOOKS.cli_reference()
    assert HOOKS.on_page_markdown(f"# x\n\n{HOOKS.CLI_MARKER}\n", None, None, None).count("### `tuneops ") == len(
        _subcommands(build_parser()))


# --------------------------------------------------------------------------- the README


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def outside_citations(path: Path, text: str) -> list[str]:
    """The relative paths a page names (a link, or a path in backticks) that resolve outside the repository."""
    cited = re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(\.\./[^`\s]+)`", text)
    return [ref for ref in cited if "://" not in ref
            and not (path.parent / ref).resolve().is_relative_to(ROOT.resolve())]


def test_the_docs_cite_no_file_outside_the_repository():
    """A reader of tuneops has nothing beside the repository: every path the README and the pages name is in it."""
    outside = {str(p.relative_to(ROOT)): refs for p in [README, *PAGES]
               if (refs := outside_citations(p, p.read_text()))}
    assert not outside, outside


def test_the_outside_check_sees_a_path_outside():
    page = ROOT / "docs" / "index.md"
    text = "See [notes](../../notes.md), `../../elsewhere/data.csv` and [the gate](concepts/gate.md)."
    assert outside_citations(page, text) == ["../../notes.md", "../../elsewhere/data.csv"]
