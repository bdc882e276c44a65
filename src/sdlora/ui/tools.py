"""The Tools tab, generated: every ``sdlora-*`` console script of the installed package whose module is one of
sdlora's tools, each a form built from the tool's own ``build_parser()`` (its arguments, their help, defaults and
choices). A new tool, or a new argument of a tool, appears in the page without UI code.

The page runs a tool as ``python -c "from sdlora.tools.<module> import main; …" <arguments>`` (no shell) and shows its
output as it comes; path arguments must lie under the server's folders (:mod:`sdlora.ui.security`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
from dataclasses import dataclass
from typing import Any

from sdlora.errors import SdloraError

#: Tools shown under kohya_ss's "Dataset Preparation" (the others are LoRA tools; the sweep summary is in Runs).
DATASET_TOOLS = ("sdlora.tools.prepare", "sdlora.tools.balance")
RUNS_TOOLS = ("sdlora.tools.sweep_summary",)
LORA, DATASET, RUNS = "LoRA tools", "Dataset Preparation", "Runs"


@dataclass(frozen=True)
class Argument:
    """One argument of a tool: ``flag`` is its option string (None for a positional one)."""

    dest: str
    flag: str | None
    kind: str  # flag (a checkbox), choice (a menu), text, list (several values, space-separated)
    help: str
    default: Any
    choices: tuple[str, ...]
    required: bool

    @property
    def label(self) -> str:
        return self.flag or self.dest


@dataclass(frozen=True)
class Tool:
    name: str  # the console script, e.g. sdlora-merge-lora
    module: str
    category: str
    description: str
    arguments: tuple[Argument, ...]

    @property
    def slug(self) -> str:
        return self.name.removeprefix("sdlora-")


def _argument(action: argparse.Action) -> Argument | None:
    if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
        return None
    flag = max(action.option_strings, key=len) if action.option_strings else None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        kind = "flag"
    elif action.choices:
        kind = "choice"
    elif action.nargs in ("*", "+") or (isinstance(action.nargs, int) and action.nargs > 1):
        kind = "list"
    else:
        kind = "text"
    default = None if action.default in (None, argparse.SUPPRESS) else action.default
    required = bool(action.required) or (flag is None and action.nargs not in ("?", "*"))
    choices = tuple(str(c) for c in action.choices or ())
    return Argument(action.dest, flag, kind, action.help or "", default, choices, required)


def _category(module: str) -> str:
    return DATASET if module in DATASET_TOOLS else RUNS if module in RUNS_TOOLS else LORA


@functools.lru_cache(maxsize=1)
def tools() -> tuple[Tool, ...]:
    """sdlora's tools from its console scripts, each with its parser's arguments (sorted by name)."""
    from importlib.metadata import entry_points

    found = []
    for entry in entry_points(group="console_scripts"):
        module_name = entry.value.split(":", 1)[0]
        if not module_name.startswith("sdlora.tools."):
            continue
        build = getattr(importlib.import_module(module_name), "build_parser", None)
        if build is None:
            continue
        parser = build()
        arguments = tuple(a for a in map(_argument, parser._actions) if a is not None)
        description = (parser.description or "").strip()
        found.append(Tool(entry.name, module_name, _category(module_name), description, arguments))
    return tuple(sorted(found, key=lambda t: t.name))


def shown_default(argument: Argument) -> Any:
    """What the argument's field shows before it is edited."""
    if argument.kind == "flag":
        return bool(argument.default)
    if argument.default is None:
        return ""
    if isinstance(argument.default, (list, tuple)):
        return " ".join(str(v) for v in argument.default)
    return str(argument.default)


def argv_for(tool: Tool, shown: list[Any]) -> tuple[list[str], list[str]]:
    """(the tool's command-line arguments for the field values, problems): only values that differ from the
    parser's defaults are passed; missing required arguments are problems."""
    import shlex

    argv, problems = [], []
    for argument, value in zip(tool.arguments, shown, strict=True):
        if argument.kind == "flag":
            if bool(value) != bool(argument.default):
                argv.append(argument.flag)
            continue
        text = "" if value is None else str(value).strip()
        if not text:
            if argument.required:
                problems.append(f"{argument.label} is required: {argument.help}")
            continue
        if text == shown_default(argument) and not argument.required:
            continue
        words = shlex.split(text) if argument.kind == "list" else [text]
        argv += ([argument.flag] if argument.flag else []) + words
    return argv, problems


def tool_named(name: str) -> Tool:
    for tool in tools():
        if tool.name == name:
            return tool
    raise SdloraError(f"{name} is not one of sdlora's tools")
