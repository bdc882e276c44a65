"""kohya's sample prompt files (docs/kohya.md §12), parsed into :class:`SamplePrompt` records.

``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped. The line is split on ``" --"``:
the first part is the prompt, each other part an option matched case-insensitively at its start:
``n <text>`` negative prompt, ``w <int>`` / ``h <int>`` width / height (rounded down to a multiple of 8, at least 64),
``s <int>`` steps (clamped to 1–1000), ``l <float>`` CFG scale, ``d <int>`` seed, ``ss <name>`` sampler (current
sd-scripts). Other options of newer sd-scripts (``g``, ``ctr``, ``rcfg``, ``fs``, ControlNet ``cn``) are ignored with a
warning.

``.toml``: a ``[prompt]`` table of common keys and a ``[[prompt.subset]]`` list, each subset's keys over the common
ones. ``.json``: a list of objects. Keys: ``prompt``, ``negative_prompt``, ``sample_steps``, ``width``, ``height``,
``scale``, ``seed``, ``sample_sampler``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError

DEFAULT_STEPS = 30  # kohya's defaults
DEFAULT_SCALE = 7.5
IGNORED_OPTIONS = ("cn", "g", "ctr", "rcfg", "fs")
_OPTION = re.compile(r"(ss|cn|ctr|rcfg|fs|n|w|h|d|s|l|g)(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)
KEYS = ("prompt", "negative_prompt", "sample_steps", "width", "height", "scale", "seed", "sample_sampler")


@dataclass(frozen=True)
class SamplePrompt:
    """One sample image to make. ``width``/``height`` None: the model family's resolution; ``seed`` None: the run's
    seed + the prompt's index; ``sampler`` None: ``sample.sampler``."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    seed: int | None = None
    sampler: str | None = None


def image_side(value: int) -> int:
    """kohya: a width/height is rounded down to a multiple of 8, and at least 64."""
    return max(64, value - value % 8)


def clamp_steps(value: int) -> int:
    """kohya: sample steps are clamped to 1–1000."""
    return max(1, min(1000, value))


def _int(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        raise ValueError
    return int(text)


_CONVERT = {
    "w": ("width", lambda v: image_side(_int(v)), "an integer (pixels)"),
    "h": ("height", lambda v: image_side(_int(v)), "an integer (pixels)"),
    "s": ("steps", lambda v: clamp_steps(_int(v)), "an integer (steps)"),
    "l": ("scale", float, "a number (CFG scale)"),
    "d": ("seed", _int, "an integer (seed)"),
    "n": ("negative_prompt", str, "a text"),
    "ss": ("sampler", lambda v: v.strip(), "a sampler name"),
}


def parse_line(line: str) -> tuple[SamplePrompt, list[str], list[str]]:
    """One .txt line → (prompt, problems, ignored options)."""
    parts = line.split(" --")
    fields: dict[str, Any] = {"prompt": parts[0].strip()}
    problems, ignored = [], []
    for part in parts[1:]:
        match = _OPTION.match(part.strip())
        if match is None:
            ignored.append(f"--{part.strip()}")
            continue
        option, value = match.group(1).lower(), (match.group(2) or "").strip()
        if option in IGNORED_OPTIONS:
            ignored.append(f"--{option}")
            continue
        name, convert, expected = _CONVERT[option]
        try:
            if not value:
                raise ValueError
            fields[name] = convert(value)
        except ValueError:
            problems.append(f"--{option} expects {expected}, got {value!r}")
    return SamplePrompt(**fields), problems, ignored


def from_mapping(entry: dict[str, Any]) -> tuple[SamplePrompt, list[str], list[str]]:
    """One .toml/.json prompt object → (prompt, problems, ignored keys)."""
    problems, fields = [], {}
    ignored = [f"{k}" for k in entry if k not in KEYS and k != "subset"]
    conversions = {
        "prompt": ("prompt", str), "negative_prompt": ("negative_prompt", str),
        "sample_steps": ("steps", lambda v: clamp_steps(int(v))), "width": ("width", lambda v: image_side(int(v))),
        "height": ("height", lambda v: image_side(int(v))), "scale": ("scale", float), "seed": ("seed", int),
        "sample_sampler": ("sampler", str),
    }  # fmt: skip
    for key, (name, convert) in conversions.items():
        if key in entry and entry[key] is not None:
            try:
                if isinstance(entry[key], bool) or (name != "prompt" and isinstance(entry[key], list | dict)):
                    raise ValueError
                fields[name] = convert(entry[key])
            except (TypeError, ValueError):
                problems.append(f"{key}: {entry[key]!r} is not valid")
    if "prompt" not in fields:
        problems.append("no 'prompt'")
        fields["prompt"] = ""
    return SamplePrompt(**fields), problems, ignored


def _entries(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            raise ValueError("a .json prompt file holds a list of objects")
        return data
    import tomllib

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    table = data.get("prompt")
    if not isinstance(table, dict) or not isinstance(table.get("subset"), list):
        raise ValueError("a .toml prompt file needs a [prompt] table with [[prompt.subset]] entries")
    common = {k: v for k, v in table.items() if k != "subset"}
    return [{**common, **subset} for subset in table["subset"]]


def load_prompts(path: str | Path) -> tuple[list[SamplePrompt], list[str]]:
    """Parse a prompt file → (prompts, warnings). Bad values raise one :class:`SdloraError` listing them all."""
    path = Path(path).expanduser()
    where = f"sample.prompts={str(path)!r}"
    if not path.is_file():
        raise SdloraError(f"{where} does not exist or is not a file")
    prompts, problems, warnings = [], [], []
    try:
        if path.suffix.lower() in (".toml", ".json"):
            items = [(f"prompt {i + 1}", *from_mapping(entry)) for i, entry in enumerate(_entries(path))]
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            items = [
                (f"line {n}", *parse_line(line.strip()))
                for n, line in enumerate(lines, 1)
                if line.strip() and not line.strip().startswith("#")
            ]
    except (UnicodeDecodeError, ValueError) as exc:  # tomllib/json errors are ValueErrors
        raise SdloraError(f"{where} cannot be read: {exc}") from None
    for label, prompt, bad, ignored in items:
        problems += [f"{label}: {p}" for p in bad]
        if ignored:
            warnings.append(f"{where} {label}: ignored {', '.join(ignored)} (not supported)")
        prompts.append(prompt)
    if problems:
        raise SdloraError(f"{where} has {len(problems)} problem(s):", problems)
    if not prompts:
        raise SdloraError(f"{where} holds no prompt (blank lines and lines starting with # are skipped)")
    return prompts, warnings
