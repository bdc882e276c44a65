"""What every LoRA tool's command line shares: one ``main`` wrapper, input/output path checks, precisions, progress.

:func:`run_tool` parses the arguments, installs a plain log format and the third-party log filters, and runs the tool:
a :class:`~sdlora.errors.SdloraError` (a missing file, a file that is not a LoRA or not a checkpoint, a LoRA of another
family, mismatched ranks, …) is printed as one ``error: …`` line with exit code 1, never a traceback; Ctrl-C exits
with 130. Heavy libraries (torch, diffusers, lycoris) are imported inside the tools, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.models.presets import MODEL_NAMES

log = logging.getLogger("sdlora")

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
#: The ``model=`` presets, for ``--model`` choices.
PRESETS = MODEL_NAMES
#: kohya's --precision / --save_precision names (plus fp32) → torch dtype names.
PRECISIONS = {"float": "float32", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def parser(description: str, examples: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults, ends its ``--help`` with ``examples`` and has ``--version``."""
    from sdlora.versions import version_text

    p = argparse.ArgumentParser(
        description=description,
        epilog="examples:\n" + examples.rstrip(),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_text())
    return p


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples printed as written; an option's default added to its help when it has one and
    the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def run_tool(build: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], Any], argv) -> int:
    """Parse ``argv`` with ``build()`` and call ``run(args)``; user errors become one line and exit code 1."""
    args = build().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    try:
        result = run(args)
    except SdloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    return int(result or 0)


def existing_file(value: str | Path, option: str, suffixes: Sequence[str] | None = None) -> Path:
    """``value`` as an existing file (with one of ``suffixes``), or an error naming ``option``."""
    path = Path(value).expanduser()
    if not path.exists():
        raise SdloraError(f"{option}={str(value)!r} does not exist")
    if not path.is_file():
        raise SdloraError(f"{option}={str(value)!r} is not a file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise SdloraError(f"{option}={str(value)!r} must be a {' / '.join(suffixes)} file")
    return path


def output_path(
    value: str | Path, option: str, inputs: Iterable[str | Path], suffixes: Sequence[str] = (), folder: bool = False
) -> Path:
    """``value`` as an output path that is none of ``inputs``, not inside an input folder and holding no input;
    a ``folder`` output must not exist yet or be empty (it is written beside and renamed into place)."""
    path = Path(value).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise SdloraError(f"{option}={str(value)!r} must end in {' / '.join(suffixes)}")
    target = path.resolve()
    for item in inputs:
        source = Path(item).expanduser().resolve()
        if target == source or source in target.parents or target in source.parents:
            raise SdloraError(f"{option}={str(value)!r} would write over the input {item}: choose another path")
    if path.is_dir() and not folder:
        raise SdloraError(f"{option}={str(value)!r} is a folder: give a file name")
    if folder and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SdloraError(f"{option}={str(value)!r} already exists and is not an empty folder: choose a new path")
    return path


def dtype(name: str | None):
    """kohya's precision name (``float``/``fp32``/``fp16``/``bf16``) → torch dtype; None stays None."""
    if name is None:
        return None
    import torch

    return getattr(torch, PRECISIONS[name])


def progress(items: Iterable, desc: str, total: int | None = None):
    """A tqdm bar over modules on a terminal (silent when stderr is not one)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="module", disable=None, leave=False)
