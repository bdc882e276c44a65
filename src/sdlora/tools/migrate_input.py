"""Reading what ``sdlora-migrate`` converts: a kohya_ss GUI config (``.json``), an sd-scripts ``.toml`` config file,
or an sd-scripts command line (``accelerate launch … train_network.py --opt value …``, from a file or a string).

Everything becomes one flat dict of option names (sd-scripts' and the GUI's), with ``--network_args`` entries
(``conv_dim=4``, ``algo=loha``, …) split into their own names and ``--flag`` options as True. Command lines also record
the script (``sdxl_train_network.py`` means ``sdxl``) and accelerate's ``--multi_gpu``/``--num_processes``/
``--num_machines``, and read their ``--config_file`` (the command line's own options win, as in sd-scripts).
"""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError

ACCELERATE = ("multi_gpu", "num_processes", "num_machines")


def literal(text: str) -> Any:
    """A kohya ``key=value`` value as Python does (``0.9,0.99`` → tuple, ``True``, ``1e-4``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_args(value: Any) -> dict[str, Any]:
    """``["a=1", "b=x"]`` or ``"a=1 b=x"`` (kohya's ``network_args`` / ``optimizer_args``) → {a: 1, b: "x"}."""
    items = shlex.split(value) if isinstance(value, str) else list(value or [])
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if sep:
            out[key.strip()] = literal(text.strip().strip("\"'"))
    return out


def _expand_network_args(options: dict[str, Any]) -> dict[str, Any]:
    args = options.pop("network_args", None)
    if args:
        try:
            expanded = split_args(args)
        except (ValueError, TypeError) as exc:
            raise SdloraError(f"network_args={args!r}: not a list of key=value entries ({exc})") from None
        for key, value in expanded.items():
            options.setdefault(key, value)
    return options


def parse_command_line(text: str) -> dict[str, Any]:
    """sd-scripts options of a command line (``--key value``, ``--key=value``, ``--flag``; several values → list)."""
    try:
        tokens = shlex.split(text.replace("\\\r\n", " ").replace("^\r\n", " ").replace("^\n", " "), posix=True)
    except ValueError as exc:  # an unclosed quote
        raise SdloraError(f"the command line cannot be split into words ({exc}): {text.strip()[:120]!r}") from None
    options: dict[str, Any] = {}
    key: str | None = None
    for token in tokens:
        if token.endswith(".py"):
            if "sdxl" in Path(token).name:
                options["sdxl"] = True
            key = None
        elif token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            key = name.replace("-", "_")
            options[key] = value if sep else True
            key = None if sep else key
        elif key is not None:
            current = options[key]
            options[key] = token if current is True else [*(current if isinstance(current, list) else [current]), token]
    return _expand_network_args(options)


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """kohya's ``--config_file`` toml: sections are only grouping; their keys are options."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value))
        else:
            out[key] = value
    return out


def read_config(source: str) -> tuple[dict[str, Any], str]:
    """(options, kind) of ``source``: a ``.json`` GUI config (``gui``), a ``.toml`` (``toml``), another file holding a
    command line, or a command line itself (``cli``)."""
    path = Path(source).expanduser()
    try:
        is_file = path.is_file()
    except OSError:  # a long command line is no file name (ENAMETOOLONG)
        is_file = False
    if not is_file:
        if "--" in source:
            return _with_config_file(parse_command_line(source)), "cli"
        raise SdloraError(f"config={source!r} does not exist (give a .json / .toml file or a quoted command line)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SdloraError(f"{path} is not a text file (not UTF-8): give a kohya_ss .json, an sd-scripts .toml or a "
                          "command line") from None  # fmt: skip
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SdloraError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not data:
            raise SdloraError(f"{path} is not a kohya_ss config (a JSON object of options)")
        return _expand_network_args(dict(data)), "gui"
    if path.suffix.lower() == ".toml":
        return _expand_network_args(_flatten(load_toml(path))), "toml"
    return _with_config_file(parse_command_line(text)), "cli"


def _with_config_file(options: dict[str, Any]) -> dict[str, Any]:
    """A command line's ``--config_file`` read as sd-scripts does: the file's options, then the command line's own,
    which win."""
    source = options.pop("config_file", None)
    if not isinstance(source, str):
        return options
    path = Path(source).expanduser()
    if not path.is_file():
        raise SdloraError(f"--config_file {source} does not exist (sd-scripts reads options from it)")
    return {**_expand_network_args(_flatten(load_toml(path))), **options}


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file (``tomllib``; on Python 3.10 the ``toml`` package lycoris-lora depends on)."""
    try:
        import tomllib as reader
    except ModuleNotFoundError:  # Python 3.10
        import toml as reader
    try:
        return reader.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise SdloraError(f"{path} is not valid TOML ({str(exc).splitlines()[0]})") from None
