"""OmegaConf resolvers sdlora's configs use (registered with the schemas, before Hydra composes).

``${sdlora.if_null:${validation.dir},0.2,0.0}`` gives 0.2 when ``validation.dir`` is null and 0.0 otherwise:
``hparams_search=optuna`` uses it to hold out images for ``val/loss`` only when no validation folder is given.

``${sdlora.dirname:${hydra.job.override_dirname}}`` makes a sweep job's folder name from its overrides: path
separators become ``_`` and a name longer than 180 characters is cut, with a hash of the whole name appended so that
two jobs never share a folder (file systems allow 255 bytes per name; Optuna's learning rates are long numbers).
"""

from __future__ import annotations

from typing import Any


def if_null(value: Any, when_null: Any, otherwise: Any) -> Any:
    """``when_null`` if ``value`` is null (None), else ``otherwise``."""
    return when_null if value is None else otherwise


MAX_DIRNAME = 180


def dirname(text: Any, max_length: int = MAX_DIRNAME) -> str:
    """``text`` as one folder name of at most ``max_length`` characters (see the module docstring)."""
    import hashlib

    name = str(text).replace("/", "_").replace("\\", "_")
    if len(name.encode("utf-8")) <= max_length:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    cut = name.encode("utf-8")[: max_length - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{cut}~{digest}"


def register_resolvers() -> None:
    """Register the ``sdlora.*`` resolvers (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sdlora.if_null"):
        OmegaConf.register_new_resolver("sdlora.if_null", if_null)
    if not OmegaConf.has_resolver("sdlora.dirname"):
        OmegaConf.register_new_resolver("sdlora.dirname", dirname)
