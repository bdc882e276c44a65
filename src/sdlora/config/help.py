"""``python train.py --help``: what sdlora is, three examples, the config groups and the most used keys with their
one-line docs — generated from the typed schema and ``conf/`` (:mod:`sdlora.config.docs`), the same source as the
web UI's form. ``python train.py --help all`` lists every key.

``train.py`` answers ``--help`` before Hydra starts: Hydra's own help page composes every config group, which takes
seconds (``benchmarks/startup.py``); Hydra's options remain under ``--hydra-help``.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from sdlora.config.docs import KeyDoc, default_choices, group_options, node_key_doc, schema_keys
from sdlora.config.layout import PROMOTED_NODE_KEYS, most_used

INTRO = (
    "sdlora — LoRA training for Stable Diffusion 1.5, 2.x (512 ε, 768 v) and SDXL on PyTorch Lightning, Hydra and "
    "diffusers. It does what kohya_ss's LoRA tab does, with kohya's formulas, defaults and file format (the LoRA "
    "loads unchanged in A1111, ComfyUI and diffusers), prints a data plan before training and runs Hydra sweeps."
)
USAGE = "usage: python train.py [group=option ...] [key=value ...]      (-m: one run per combination of values)"
EXAMPLES = (
    ("python train.py experiment=demo", "the tiny model on the bundled images: a first run on a CPU"),
    (
        "python train.py model=sdxl model.pretrained=/models/sd_xl_base_1.0.safetensors "
        "data.train_dir=/data/my_character data.caption_extension=.txt network.rank=16",
        "train an SDXL LoRA (data.train_dir holds folders named <repeats>_<class tokens>)",
    ),
    (
        "python train.py model=sd15 data.train_dir=/data/my_character dry_run=true",
        "print the data plan (buckets, repeats, steps) and stop; no model is needed",
    ),
)
MORE = (
    ("python train.py --help all", "every key with its type, default and doc"),
    ("python train.py --cfg job [overrides]", "the composed config, without running"),
    ("python train.py --hydra-help", "Hydra's own options (multirun, output folders, …)"),
    ("sdlora-ui", 'the same options as a web page, with live runs (pip install -e ".[ui]")'),
    ("README.md", "the guide; kohya option → sdlora key table"),
)


def _width() -> int:
    return max(80, min(shutil.get_terminal_size((120, 24)).columns, 140))


def _rows(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Two columns: a name and its text, wrapped under the text column."""
    column = min(max((len(name) for name, _ in rows), default=0) + 2, 42)
    lines = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, width - column - 2) or [""]
        if len(name) + 2 > column:
            lines.append(f"  {name}")
            lines += [" " * (column + 2) + part for part in wrapped]
            continue
        lines.append(f"  {name.ljust(column)}{wrapped[0]}")
        lines += [" " * (column + 2) + part for part in wrapped[1:]]
    return lines


def _default_text(key: KeyDoc) -> str:
    if key.kind == "node":
        return ""
    value = key.default
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f" (default {text})"


def _key_rows(keys: list[KeyDoc]) -> list[tuple[str, str]]:
    return [(key.key, f"{key.doc}{_default_text(key)}".strip()) for key in keys]


def _node_default(key: str, conf_dir: str | Path | None) -> object:
    """An open node's argument as the default option of its group sets it (``optimizer.lr`` of adamw)."""
    from omegaconf import OmegaConf

    from sdlora.config.docs import conf_dir_path

    group, _, name = key.partition(".")
    option = default_choices(conf_dir).get(group)
    path = conf_dir_path(conf_dir) / group / f"{option}.yaml"
    return OmegaConf.load(path).get(name) if option and path.is_file() else None


def _group_rows(conf_dir: str | Path | None) -> list[tuple[str, str]]:
    defaults = default_choices(conf_dir)
    rows = []
    for group, options in group_options(conf_dir).items():
        names = [f"{o.name}*" if o.name == defaults.get(group) else o.name for o in options]
        rows.append((group, ", ".join(names)))
    return rows


def help_text(all_keys: bool = False, conf_dir: str | Path | None = None) -> str:
    """The ``--help`` page (``all_keys``: every key instead of the most used ones)."""
    width = _width()
    keys = schema_keys(conf_dir)
    by_key = {k.key: k for k in keys}
    for key in PROMOTED_NODE_KEYS:
        by_key[key] = KeyDoc(key, "any", False, _node_default(key, conf_dir), node_key_doc(key))
    shown = [k for k in keys if k.kind != "node"] if all_keys else [by_key[k] for k in most_used() if k in by_key]
    title = "keys (key=value)" if all_keys else "most used keys (key=value; `--help all` lists every key)"
    lines = [*textwrap.wrap(INTRO, width), "", USAGE, "", "examples:"]
    for command, text in EXAMPLES:
        lines += [f"  # {text}", *textwrap.wrap(command, width - 4, initial_indent="  ", subsequent_indent="      ")]
    lines += ["", "config groups (group=option; * = default):", *_rows(_group_rows(conf_dir), width)]
    lines += ["", f"{title}:", *_rows(_key_rows(shown), width)]
    lines += ["", "more:", *_rows(list(MORE), width)]
    return "\n".join(lines) + "\n"


def wants_help(argv: list[str]) -> bool:
    """Whether a ``train.py`` command line asks for sdlora's help page (``--help`` / ``-h``)."""
    return any(arg in ("--help", "-h") for arg in argv)


def print_help(argv: list[str]) -> int:
    """Print the page for ``train.py``'s arguments ``argv`` (``--help all``: every key); returns the exit code."""
    print(help_text(all_keys="all" in argv), end="")
    return 0
