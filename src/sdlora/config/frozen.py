"""Read-only configs: the resolved config cannot be changed by anything downstream.

The schema dataclasses derive from :class:`Freezable`; :func:`freeze` marks an instance (and everything inside it)
read-only: a dataclass field assignment raises :class:`dataclasses.FrozenInstanceError`, lists become tuples and the
open nodes (``optimizer``, ``scheduler``, ``logger``: plain dicts) become :class:`FrozenDict`. Hydra still composes
into the (mutable) schema classes; only the instance produced by :mod:`sdlora.config.resolve` is frozen.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

_FLAG = "_sdlora_frozen"


class Freezable:
    """Mixin of the schema dataclasses: writable until :func:`freeze` is called on the instance."""

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, _FLAG, False):
            raise dataclasses.FrozenInstanceError(
                f"cannot assign {type(self).__name__}.{name}: the resolved config is read-only (change the config "
                "before sdlora.config.resolve, or derive a value where it is used)"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if getattr(self, _FLAG, False):
            raise dataclasses.FrozenInstanceError(f"cannot delete {type(self).__name__}.{name}: read-only config")
        object.__delattr__(self, name)


class FrozenDict(dict):
    """A dict that refuses changes (JSON, Hydra's ``instantiate`` and OmegaConf read it as a dict)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("the resolved config is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self):  # pickles (sweep launchers, DataLoader workers) as a plain dict
        return (dict, (dict(self),))


def freeze(value: Any) -> Any:
    """``value`` made read-only, recursively (dataclass instances in place; lists → tuples, dicts → FrozenDict)."""
    if isinstance(value, Freezable) and dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            object.__setattr__(value, f.name, freeze(getattr(value, f.name)))
        object.__setattr__(value, _FLAG, True)
        return value
    if isinstance(value, Enum | str | bytes | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable copy: dataclasses → dicts, tuples → lists, enums → their values (for YAML/JSON)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: thaw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value
