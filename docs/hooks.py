"""MkDocs hooks (``hooks:`` in mkdocs.yml): the reference pages that must not drift from the code.

At build time a page's marker line is replaced by markdown generated from the code itself:

- ``<!-- generated: configuration -->``: every field of ``tuneops.config.TuneopsConfig`` with its type, constraints,
  default and description, section by section (nested sections and the method settings under ``training.<method>``
  included), and the defaults each task family fills in;
- ``<!-- generated: cli -->``: every subcommand of the ``tuneops`` parser (``tuneops.cli.build_parser``) with its
  usage line and arguments.

``tests/test_docs.py`` imports this file to check that every schema field and every subcommand is listed.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from typing import Any

CONFIG_MARKER = "<!-- generated: configuration -->"
CLI_MARKER = "<!-- generated: cli -->"
USAGE_WIDTH = 100  # fixed, so the generated page does not depend on the terminal that builds it


# --------------------------------------------------------------------------- markdown helpers


def inline(text: str) -> str:
    """Prose from a docstring or help text as one line of markdown, safe inside a table cell.

    Backtick spans stay code; elsewhere the characters markdown would read as markup are escaped."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part)
        else:
            part = part.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            for char in "*_[]|":
                part = part.replace(char, "\\" + char)
            out.append(part)
    return "".join(out)


def code(text: str) -> str:
    """``text`` as a code span (backticks inside it are doubled around)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def anchor(dotted: str) -> str:
    return "config-" + re.sub(r"[^a-z0-9]+", "-", dotted.lower()).strip("-")


# --------------------------------------------------------------------------- configuration reference


def _models_in(annotation: Any) -> list[type]:
    """The pydantic models an annotation holds (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_list_of_models(annotation: Any) -> bool:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _is_list_of_models(args[0])
    return origin is list and bool(_models_in(annotation))


def type_name(annotation: Any) -> str:
    """A field's type as a reader writes it in YAML terms (``str | null``, ``one of: a, b``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]" if args else "dict"
    if annotation is typing.Any:
        return "any"
    if _models_in(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: Any) -> str:
    """Bounds of a field (``ge=1`` reads as ``≥ 1``)."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}
    out = []
    for item in field.metadata:
        for key, sign in signs.items():
            value = getattr(item, key, None)
            if value is not None:
                out.append(f"{sign} {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                           else f"{sign} {value}")
    return ", ".join(out)


def _yaml_value(value: Any) -> str:
    """A value as it is written in a YAML config (flow style for lists and mappings)."""
    import yaml

    if isinstance(value, str) and (not value or "\n" in value or value != value.strip()):
        return json.dumps(value)  # a double-quoted YAML string, on one line
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def default_text(field: Any) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "its own defaults"
    return code(_yaml_value(value))


def walk_config(model: type, prefix: str = "") -> list[tuple[str, type, list[tuple[str, Any]]]]:
    """Every section of the schema, depth first: (dotted name, model, [(field name, field)])."""
    sections = [(prefix, model, list(model.model_fields.items()))]
    for name, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            dotted = f"{prefix}.{name}" if prefix else name
            if _is_list_of_models(field.annotation):
                dotted += "[]"
            sections += walk_config(sub, dotted)
    return sections


def _section_doc(model: type) -> str:
    doc = (model.__doc__ or "").strip()
    return inline(doc.split("\n\n")[0]) if doc else ""


def field_row(full: str, field: Any) -> str:
    """One table row: the dotted name, its type (a section links to its own table), default, description."""
    kind = type_name(field.annotation)
    if _models_in(field.annotation):
        link = f"[section](#{anchor(full + ('[]' if _is_list_of_models(field.annotation) else ''))})"
        shown = inline(kind.replace("section", "SECTION")).replace("SECTION", link)
    else:
        shown = code(kind)
    bounds = constraints(field)
    shown += f" ({inline(bounds)})" if bounds else ""
    return f"| {code(full)} | {shown} | {default_text(field)} | {inline(field.description or '')} |"


def config_reference() -> str:
    """The configuration reference, generated from the schema's own descriptions."""
    from tuneops.config import TuneopsConfig
    from tuneops.families import FAMILIES
    from tuneops.methods import METHODS

    method_of = {m.settings: m for m in METHODS.values() if m.settings is not None}
    lines: list[str] = []
    lines += ["## Sections", "", "| section | type | default | what it holds |", "|---|---|---|---|"]
    lines += [field_row(name, field) for name, field in TuneopsConfig.model_fields.items()]
    lines.append("")
    for dotted, model, fields in walk_config(TuneopsConfig):
        if not dotted:
            continue
        depth = min(dotted.count(".") + 2, 4)
        title = code(dotted)
        method = method_of.get(model)
        if method is not None:
            title += f": method {code(method.name)}"
        lines += [f"{'#' * depth} {title} {{ #{anchor(dotted)} }}", ""]
        if method is not None:
            lines += [f"{inline(method.summary[0].upper() + method.summary[1:])}. Given only with "
                      f"{code('training.method: ' + method.name)} (its defaults apply when the section is left out).",
                      ""]
        doc = _section_doc(model)
        if doc:
            lines += [doc, ""]
        if dotted.endswith("[]"):
            lines += [f"Each item of the list {code(dotted[:-2])} has these fields.", ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        lines += [field_row(f"{dotted}.{name}", field) for name, field in fields]
        lines.append("")
    lines += ["## Task family defaults {: #config-family-defaults }", "",
              "A task family (`model.task`) fills these settings where the config leaves them out; a key the config "
              "sets always wins. Under `training`, `*` applies to every method (its `method` is the family's default "
              "method) and a method's own line applies on top when the config trains with that method.", "",
              "| family | what it is | gate defaults | training defaults |", "|---|---|---|---|"]
    for family in FAMILIES.values():
        gate = "<br>".join(code(f"gate.{k}: {_yaml_value(v)}") for k, v in family.gate_defaults.items()) or "none"
        training = "<br>".join(
            f"{code(method)}: " + ", ".join(code(f"{k}: {_yaml_value(v)}") for k, v in values.items())
            for method, values in family.training_defaults.items()) or "none"
        lines.append(f"| {code(family.name)} | {inline(family.summary)} | {gate} | {training} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI reference


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name, in the order they were added."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> list[str]:
    """The table of a parser's arguments; ``skip``: option strings documented once for every command."""
    rows = ["| argument | required | default | description |", "|---|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or (
                action.option_strings and set(action.option_strings) <= set(skip)):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
            name = ", ".join(code(o + metavar) for o in action.option_strings)
            required = "yes" if action.required else ""
        else:
            name, required = code(action.metavar or action.dest), "yes"
        default = action.default
        if default in (None, False, argparse.SUPPRESS, []) or not action.option_strings:
            shown = ""
        else:
            shown = code(str(default))
        extra = " (repeatable)" if isinstance(action, argparse._AppendAction) and "repeatable" not in (
            action.help or "") else ""
        rows.append(f"| {name} | {required} | {shown} | {inline(action.help or '')}{extra} |")
    return rows if len(rows) > 2 else ["No arguments besides the global options."]


def cli_reference() -> str:
    """The CLI reference, generated from the argparse parser of the `tuneops` command."""
    from tuneops.cli import build_parser

    parser = build_parser()
    lines = [f"{inline(parser.description or '')}", "", "```text", _usage(parser), "```", "",
             inline(parser.epilog or ""), "", "## Global options {: #cli-global-options }", "",
             "Given before the command, or after it (`tuneops -v train C`, `tuneops train C -v`); `-h`/`--help` "
             "after any command prints its own help.", ""]
    lines += _arguments(parser) + [""]
    common = tuple(o for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
                   for o in a.option_strings)
    commands = subcommands(parser)
    lines += ["## Commands", "", "| command | what it does |", "|---|---|"]
    lines += [f"| [{code('tuneops ' + name)}](#cli-{name}) | {inline(p.description or '')} |"
              for name, p in commands.items()]
    lines.append("")
    for name, sub in commands.items():
        lines += [f"### `tuneops {name}` {{ #cli-{name} }}", "", inline(sub.description or ""), "", "```text",
                  _usage(sub), "```", ""]
        lines += _arguments(sub, skip=common) + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the MkDocs event

GENERATORS = {CONFIG_MARKER: config_reference, CLI_MARKER: cli_reference}
NAMES = {"configuration": CONFIG_MARKER, "cli": CLI_MARKER}


def generate(marker: str) -> str:
    """The markdown for a marker, made in a separate Python process.

    ``import tuneops`` quiets every library's log records below ERROR (the console of a tuneops command shows
    tuneops' own lines), and MkDocs is such a library: imported into the MkDocs process, it would swallow the
    warnings that ``mkdocs build --strict`` fails on (a broken link or anchor). So tuneops is only imported here,
    in a child process that writes the page section to a file."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    name = next(n for n, m in NAMES.items() if m == marker)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"{name}.md"
        done = subprocess.run([sys.executable, __file__, name, str(out)], capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"docs/hooks.py could not generate the {name} reference (exit {done.returncode}):\n"
                               f"{done.stdout}{done.stderr}")
        return out.read_text()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker in GENERATORS:
        if marker in markdown:
            markdown = markdown.replace(marker, generate(marker))
    return markdown


if __name__ == "__main__":  # python docs/hooks.py configuration|cli OUTPUT.md (what generate() runs)
    import sys
    from pathlib import Path

    Path(sys.argv[2]).write_text(GENERATORS[NAMES[sys.argv[1]]]())
