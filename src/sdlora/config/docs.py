"""The typed schema as documentation: every key of :class:`~sdlora.config.schema.TrainConfig` with its type, default
and one-line doc, and the options of every config group with theirs.

This is the one source that ``python train.py --help`` (:mod:`sdlora.config.help`) and the web UI's form
(:mod:`sdlora.ui.form`) are generated from, so neither can drift from the CLI:

- keys, types and defaults come from ``dataclasses.fields`` of the schema (nested dataclasses are walked; a list of
  dataclasses such as ``data.subsets`` is one key; ``Any`` fields that are also config groups — ``optimizer``,
  ``scheduler``, ``logger`` — are *open nodes* whose keys are their target's arguments);
- the doc of a key is the comment at the end of its line in ``src/sdlora/config/schema.py`` (the kohya option in
  brackets), read with :mod:`tokenize`; a comment on a line of its own inside a dataclass is a *heading* for the keys
  below it (``# captions``, ``# --- LyCORIS options …``);
- a group's options are the ``.yaml`` files of ``conf/<group>/``; an option's doc is the first comment line of its
  file (``# @package`` lines skipped); the default options are ``conf/train.yaml``'s defaults list.

Nothing here imports torch, Lightning or Hydra's composition (it runs before ``--help`` answers).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import io
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

#: Config groups whose options are not part of a single run's form (Hydra's own settings; sweeps need ``-m``).
RUN_ONLY_GROUPS = ("hydra", "hparams_search")


@dataclass(frozen=True)
class KeyDoc:
    """One key of the schema. ``kind``: bool, int, float, str, enum, list, any (Hydra grammar) or node (an open node
    such as ``optimizer``: its keys are its target's keyword arguments)."""

    key: str  # dotted, e.g. "network.rank"
    kind: str
    nullable: bool
    default: Any  # the schema's default (a group option may set another value)
    doc: str  # the line's comment, e.g. "[network_dim]; OFT/BOFT: the block size; null for ia3 and full (no rank)"
    heading: str = ""  # the comment heading above it inside its dataclass
    choices: tuple[str, ...] = ()  # enum values

    @property
    def group(self) -> str:
        """The top-level node the key belongs to ("" for top-level keys such as ``seed``)."""
        return self.key.split(".", 1)[0] if "." in self.key else ""

    @property
    def type_name(self) -> str:
        name = "|".join(self.choices) if self.kind == "enum" else self.kind
        return f"{name} or null" if self.nullable else name


@dataclass(frozen=True)
class OptionDoc:
    """One option of a config group: ``conf/<group>/<name>.yaml`` and the first line of its comment."""

    group: str
    name: str
    doc: str


# ------------------------------------------------------------------------------------------------ comments
def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """(trailing comments by line, comment-only lines by line) of ``source``."""
    trailing, alone = {}, {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.start[0]
            (trailing if line in code_lines else alone)[line] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return trailing, alone


def _heading(text: str) -> str:
    return text.strip("-— ").strip()


@functools.lru_cache(maxsize=8)
def _field_comments(module_name: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(class, field) → (doc, heading) for every annotated field of every class in ``module_name``'s source."""
    import importlib

    source = inspect.getsource(importlib.import_module(module_name))
    trailing, alone = _comments(source)
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        heading = ""
        headings = {line: _heading(text) for line, text in alone.items() if node.lineno < line <= node.end_lineno}
        for item in node.body:
            above = [line for line in headings if line < item.lineno]
            if above:
                heading = headings[max(above)]
                for line in above:
                    del headings[line]
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                found[(node.name, item.target.id)] = (trailing.get(item.lineno, ""), heading)
    return found


# ---------------------------------------------------------------------------------------------------- types
def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(annotation))
    return annotation, False


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "enum", tuple(str(m.value) for m in annotation)
    if annotation in (bool, int, float, str):
        return annotation.__name__, ()
    if typing.get_origin(annotation) in (list, tuple, dict):
        return "list", ()
    return "any", ()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if value == MISSING:
        return None
    return value.value if isinstance(value, enum.Enum) else value


def walk_schema(cls: type, prefix: str = "", groups: tuple[str, ...] = ()) -> list[KeyDoc]:
    """The keys of the dataclass ``cls`` (nested dataclasses walked), in declaration order; ``groups``: the config
    groups, whose ``Any`` fields are open nodes."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls.__module__)
    keys: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        annotation, nullable = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(annotation):
            keys += walk_schema(annotation, f"{key}.", groups)
            continue
        kind, choices = _kind(annotation)
        if kind == "any" and key in groups:
            kind = "node"
        doc, heading = comments.get((cls.__name__, f.name), ("", ""))
        nullable = nullable or (annotation is Any and _default(f) is None)
        keys.append(KeyDoc(key, kind, nullable, _default(f), doc, heading, choices))
    return keys


def schema_keys(conf_dir: str | Path | None = None) -> list[KeyDoc]:
    """Every key of ``TrainConfig`` (see the module docstring)."""
    from sdlora.config.schema import TrainConfig

    return walk_schema(TrainConfig, groups=tuple(group_options(conf_dir)))


# --------------------------------------------------------------------------------------------------- groups
def conf_dir_path(conf_dir: str | Path | None = None) -> Path:
    """The config folder: ``conf_dir``, else ``./conf``, else the repository's ``conf/`` beside the package."""
    candidates = [Path(conf_dir)] if conf_dir else [Path("conf"), Path(__file__).resolve().parents[3] / "conf"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    from sdlora.errors import SdloraError

    raise SdloraError(f"no sdlora config folder (conf/train.yaml) at {candidates[0]}: run in the repository")


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            return ""
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


@functools.lru_cache(maxsize=8)
def _group_options(conf: Path) -> dict[str, tuple[OptionDoc, ...]]:
    groups = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in RUN_ONLY_GROUPS):
        files = sorted(folder.glob("*.yaml"))
        groups[folder.name] = tuple(OptionDoc(folder.name, f.stem, _first_comment(f)) for f in files)
    return groups


def group_options(conf_dir: str | Path | None = None) -> dict[str, tuple[OptionDoc, ...]]:
    """Group name → its options (``conf/<group>/*.yaml``), for every group a single run chooses from."""
    return _group_options(conf_dir_path(conf_dir))


def default_choices(conf_dir: str | Path | None = None) -> dict[str, str | None]:
    """Group name → the option ``conf/train.yaml`` chooses (None: no option unless one is given)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir_path(conf_dir) / "train.yaml")).get("defaults", [])
    choices: dict[str, str | None] = {}
    for entry in defaults:
        if isinstance(entry, dict):
            choices.update({str(k): (None if v is None else str(v)) for k, v in entry.items()})
    return {group: choices.get(group) for group in group_options(conf_dir)}


def node_key_doc(key: str) -> str:
    """The doc of an open node's argument (``optimizer.lr``, ``scheduler.warmup_steps``): its row of the kohya table
    (:mod:`sdlora.tools.kohya_options`), or "" where no row names it."""
    from sdlora.tools.kohya_options import ROWS

    for row in ROWS:
        if f"`{key}`" in row.sdlora or f"`{key}=" in row.sdlora:
            kohya = row.kohya.replace("`", "").replace("\\|", "|")
            return f"{row.notes} [{kohya}]" if row.notes else f"[{kohya}]"
    return ""
