"""The Training form, generated: one field per key of the typed schema and one menu per config group
(:mod:`sdlora.config.docs`), placed in kohya_ss's tabs (:mod:`sdlora.config.layout`). There is no list of options
here: a key added to the schema, or a ``.yaml`` added to a ``conf/`` group, appears in the page by itself.

The form stands for a ``python train.py <overrides>`` command: a group menu or a field whose value differs from what
the chosen options compose to becomes an override (:meth:`Form.overrides`), and a command (or a saved experiment, or
a kohya_ss config through ``sdlora-migrate``) fills the form back (:meth:`Form.values_for`). The command composes
with Hydra to the same config as the one typed by hand (tested).
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.config.docs import KeyDoc, conf_dir_path, default_choices, group_options, node_key_doc, schema_keys
from sdlora.config.layout import ADVANCED, PROMOTED_NODE_KEYS, group_tab, tab_of
from sdlora.errors import SdloraError
from sdlora.ui import values
from sdlora.ui.compose import Composed, checked, compose, plain

EXPERIMENT = "experiment"


@dataclass(frozen=True)
class FormField:
    """One control of the form: a config group's menu (``kind`` "group") or a key's field (see :mod:`.values`)."""

    key: str
    kind: str  # group, bool, choice, str, text, node
    info: str
    tab: str
    choices: tuple[str, ...] = ()
    nullable: bool = False
    heading: str = ""

    @property
    def section(self) -> str:
        """The top-level node the key belongs to ("run" for top-level keys); groups are their own section."""
        return self.key if self.kind == "group" else self.key.split(".", 1)[0] if "." in self.key else "run"

    @property
    def elem_id(self) -> str:
        return ("group-" if self.kind == "group" else "field-") + self.key.replace(".", "-")


def _kind(doc: KeyDoc) -> tuple[str, tuple[str, ...]]:
    if doc.kind == "bool":
        return ("choice", ("", "true", "false")) if doc.nullable else ("bool", ())
    if doc.kind == "enum":
        return "choice", (("",) if doc.nullable else ()) + doc.choices
    if doc.kind in ("str", "node"):
        return doc.kind, ()
    return "text", ()


def _info(doc: KeyDoc) -> str:
    default = "" if doc.kind == "node" else f"default: {values.display('text', doc.default) or 'null'}"
    empty = "; empty = null" if doc.nullable and doc.kind not in ("bool", "node") else ""
    parts = [doc.doc, f"{doc.type_name}{empty}" + (f", {default}" if default else "")]
    return " — ".join(p for p in parts if p)


def key_fields(conf_dir: Path) -> list[FormField]:
    """A field per schema key (plus the promoted arguments of open nodes, e.g. ``optimizer.lr``)."""
    fields = []
    for doc in schema_keys(conf_dir):
        kind, choices = _kind(doc)
        fields.append(FormField(doc.key, kind, _info(doc), tab_of(doc.key), choices, doc.nullable, doc.heading))
        for key in PROMOTED_NODE_KEYS:
            if key.startswith(f"{doc.key}."):
                fields.append(FormField(key, "text", f"{node_key_doc(key)} — a value", tab_of(key), (), False))
    return fields


def group_fields(conf_dir: Path) -> list[FormField]:
    """A menu per config group; groups without a default option (experiment, debug) may be left empty."""
    defaults = default_choices(conf_dir)
    fields = []
    for group, options in group_options(conf_dir).items():
        names = tuple(o.name for o in options)
        optional = defaults.get(group) is None or group == "logger"
        info = f"config group ({group}=<option>; conf/{group}/*.yaml)"
        fields.append(FormField(group, "group", info, group_tab(group), (("",) if optional else ()) + names))
    return fields


class Form:
    """The fields of the page and the conversions between their values and a command line."""

    def __init__(self, conf_dir: str | Path | None = None) -> None:
        self.conf_dir = conf_dir_path(conf_dir)
        self.fields = group_fields(self.conf_dir) + key_fields(self.conf_dir)
        self.index = {(f.kind == "group", f.key): i for i, f in enumerate(self.fields)}
        self.keys = [f.key for f in self.fields if f.kind != "group"]

    def field(self, key: str, group: bool = False) -> FormField:
        return self.fields[self.index[(group, key)]]

    def hidden(self, node: str) -> tuple[str, ...]:
        """Arguments of the open node ``node`` that are fields of their own."""
        return tuple(k.split(".", 1)[1] for k in PROMOTED_NODE_KEYS if k.startswith(f"{node}."))

    # ----------------------------------------------------------------------------------- config → fields
    def values_for(self, overrides: list[str]) -> list[Any]:
        """What each field shows for the config ``overrides`` compose to (an :class:`SdloraError` if they do not)."""
        try:
            cfg, choices = compose(self.conf_dir, overrides)
        except Exception as exc:
            raise SdloraError(f"these settings do not compose: {str(exc).strip()}") from None
        shown = []
        for f in self.fields:
            if f.kind == "group":
                shown.append(choices.get(f.key) or "")
            else:
                shown.append(values.display(f.kind, plain(cfg, f.key), self.hidden(f.key)))
        return shown

    def defaults(self) -> list[Any]:
        return self.values_for([])

    # ----------------------------------------------------------------------------------- fields → command
    def group_overrides(self, shown: list[Any]) -> list[str]:
        """The group choices of the menus that differ from what the experiment (or ``train.yaml``) chooses."""
        groups = {f.key: shown[i] or None for i, f in enumerate(self.fields) if f.kind == "group"}
        experiment = groups.pop(EXPERIMENT, None)
        head = [f"{EXPERIMENT}={experiment}"] if experiment else []
        base_choices = _composed(self.conf_dir, tuple(head))[1]
        for group, choice in groups.items():
            if choice != base_choices.get(group):
                head.append(f"{group}={choice}" if choice else f"~{group}")
        return head

    def is_group_override(self, override: str) -> bool:
        name = override.lstrip("~").split("=", 1)[0]
        return (True, name) in self.index

    def overrides(self, shown: list[Any]) -> tuple[list[str], dict[str, list[str]]]:
        """(the overrides the field values stand for, problems of values that cannot be read, by key)."""
        head = self.group_overrides(shown)
        base = _composed(self.conf_dir, tuple(head))[0]
        overrides, problems = list(head), {}
        for i, f in enumerate(self.fields):
            if f.kind == "group":
                continue
            value, problem = values.parse(f.kind, shown[i], f.nullable)
            if problem:
                problems[f.key] = [problem]
            elif f.kind == "node":
                overrides += values.node_overrides(f.key, value, plain(base, f.key), self.hidden(f.key))
            elif not values.same(f.kind, value, plain(base, f.key)):
                overrides.append(f"{f.key}={values.hydra_value(value)}")
        return overrides, problems

    def check(self, shown: list[Any]) -> tuple[list[str], Composed]:
        """The overrides of the form and their composed, checked config (problems by field key)."""
        overrides, problems = self.overrides(shown)
        if problems:
            return overrides, Composed(None, problems=problems)
        return overrides, checked(self.conf_dir, overrides, self.keys)


@functools.lru_cache(maxsize=64)
def _composed(conf_dir: Path, overrides: tuple[str, ...]):
    """Composed group choices (read only; cached: the same few are composed on every change)."""
    return compose(conf_dir, list(overrides))


def command_line(overrides: list[str]) -> str:
    """``python train.py <overrides>``, quoted for a shell."""
    return " ".join(["python", "train.py", *(shlex.quote(o) for o in overrides)])


def parse_command(text: str) -> tuple[list[str], list[str]]:
    """(overrides, notes) of a ``python train.py …`` line: the program and Hydra's own options are left out."""
    words = shlex.split(text.replace("\\\n", " "))
    while words and (words[0].endswith(("python", "python3")) or words[0].endswith("train.py")):
        words.pop(0)
    overrides, notes = [], []
    for word in words:
        if word.startswith("-") or word.startswith("hydra.") or word.startswith("hydra/"):
            notes.append(f"left out {word!r}: the page runs one run in its own folder")
        else:
            overrides.append(word)
    return overrides, notes


def experiment_text(form: Form, overrides: list[str], source: str) -> str:
    """``conf/experiment/<name>.yaml`` (``# @package _global_``) holding ``overrides`` (an :class:`SdloraError`
    for a removed key, which an experiment cannot express)."""
    from sdlora.tools.migrate import experiment_yaml
    from sdlora.tools.migrate_rules import Context, Override

    items = []
    for override in overrides:
        if form.is_group_override(override):
            name, _, choice = override.lstrip("~").partition("=")
            items.append(Override(name, choice or None, group=True))
        elif override.startswith("~"):
            raise SdloraError(f"{override}: an experiment file cannot remove a key; set its value instead")
        else:
            key, _, text = override.lstrip("+").partition("=")
            items.append(Override(key, values.parse_value(text)[0]))
    return experiment_yaml(items, source, Context({}, "gui", form.conf_dir))


def advanced_sections(form: Form) -> list[str]:
    """The sections of the Advanced tab, in the schema's order."""
    seen: dict[str, None] = {}
    for f in form.fields:
        if f.tab == ADVANCED:
            seen.setdefault(f.section)
    return list(seen)
