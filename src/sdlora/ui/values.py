"""One field's value between the page and the command line: what a field shows for a config value, and the Python
value (in Hydra's grammar) a field's text stands for.

Field kinds: ``bool`` (a checkbox), ``choice`` (a menu; "" means null), ``str`` (text as written; empty = null where
the key allows it), ``text`` (a value in Hydra's override grammar: numbers, lists, ``null``; empty = null) and ``node``
(an open node's keyword arguments as YAML, e.g. the optimizer's ``betas``/``weight_decay``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from sdlora.tools.migrate import hydra_value

__all__ = ["display", "hydra_value", "node_overrides", "parse", "parse_value", "same"]


def display(kind: str, value: Any, hidden: tuple[str, ...] = ()) -> Any:
    """What a field of ``kind`` shows for the config ``value`` (``hidden``: node keys shown elsewhere)."""
    if kind == "bool":
        return bool(value)
    if kind == "node":
        if not isinstance(value, dict):
            return ""
        shown = {k: v for k, v in value.items() if k != "_partial_" and k not in hidden}
        return OmegaConf.to_yaml(OmegaConf.create(shown)).strip() if shown else ""
    if value is None:
        return ""
    if kind in ("choice", "str"):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return hydra_value(value)


def parse(kind: str, shown: Any, nullable: bool) -> tuple[Any, str | None]:
    """(the Python value a field's content stands for, a problem or None)."""
    if kind == "bool":
        return bool(shown), None
    text = "" if shown is None else str(shown)
    if kind == "node":
        return _parse_node(text)
    if not text.strip():
        return _empty(kind, nullable)
    if kind in ("str", "choice"):
        return (text if kind == "str" else _choice(text)), None
    return parse_value(text.strip())


def _empty(kind: str, nullable: bool) -> tuple[Any, str | None]:
    if nullable:
        return None, None
    if kind == "str":
        return "", None
    return None, "a value is required (this key cannot be null)"


def _choice(text: str) -> Any:
    return {"true": True, "false": False}.get(text, text)


def parse_value(text: str) -> tuple[Any, str | None]:
    """(the Python value of ``text`` in Hydra's override grammar, a problem or None)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(f"key={text}")
    except Exception as exc:
        return None, f"{text!r} is not a value in Hydra's grammar ({str(exc).strip().splitlines()[0]})"
    if override.is_sweep_override():
        return None, f"{text!r} is a sweep (several values): one value per run here; sweeps run with python train.py -m"
    return override.value(), None


def _parse_node(text: str) -> tuple[Any, str | None]:
    if not text.strip():
        return {}, None
    try:
        value = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except Exception as exc:
        return None, f"not YAML 'key: value' lines ({str(exc).strip().splitlines()[0]})"
    if not isinstance(value, dict):
        return None, "write the arguments as 'key: value' lines"
    return value, None


def same(kind: str, value: Any, base: Any) -> bool:
    """Whether a field's value equals the composed config's (no override needed)."""
    if kind == "str":
        return value == (None if base is None else str(base))
    if isinstance(value, bool) != isinstance(base, bool):
        return False
    return value == base


def node_overrides(key: str, edited: dict[str, Any] | None, base: Any, hidden: tuple[str, ...] = ()) -> list[str]:
    """The overrides that turn the composed node ``base`` into ``edited`` (new keys with ``+``, removed ones with
    ``~``); ``hidden`` keys are fields of their own."""
    base = base if isinstance(base, dict) else {}
    edited = edited or {}
    overrides = []
    for name, value in edited.items():
        if name in hidden:
            continue
        if name not in base:
            overrides.append(f"+{key}.{name}={hydra_value(value)}")
        elif value != base[name]:
            overrides.append(f"{key}.{name}={hydra_value(value)}")
    overrides += [
        f"~{key}.{name}" for name in base if name not in edited and name != "_partial_" and name not in hidden
    ]
    return overrides
