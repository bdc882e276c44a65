"""The config the page stands for, composed and checked exactly as ``python train.py <overrides>`` would: Hydra's
compose API on the real ``conf/`` (as ``tests/helpers/config.py`` does), the schema (:func:`sdlora.config.resolve.
typed_config`) and the one validation pass (:func:`sdlora.config.checks.check_config`). Each problem is given to the
field whose dotted key it names.

Hydra's composition is global state: one lock serialises it between the web server's threads.
"""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sdlora.errors import SdloraError

_LOCK = threading.Lock()
GENERAL = ""  # problems that name no field of the form


@dataclass
class Composed:
    """A composed config, the group options it was composed from (Hydra's ``runtime.choices``), and its problems
    by field key (``GENERAL`` for the rest); ``config`` is None when composing failed."""

    config: DictConfig | None
    choices: dict[str, str | None] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.problems


def compose(conf_dir: Path, overrides: list[str]) -> tuple[DictConfig, dict[str, str | None]]:
    """``conf/train.yaml`` composed with ``overrides``; (config without its ``hydra`` node, group choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import sdlora.config  # noqa: F401  (registers the schemas)

    with _LOCK, initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    choices = {str(k): (None if v is None else str(v)) for k, v in cfg.hydra.runtime.choices.items()}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, {k: v for k, v in choices.items() if "/" not in k and k != "hydra"}


def _message(exc: BaseException) -> str:
    """Hydra's composition error with its cause (the line that names the key)."""
    parts = [str(exc).strip()]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip() not in parts[0]:
        parts.append(str(cause).strip())
    return "\n".join(p for p in parts if p)


def assign(problems: list[str], keys: list[str]) -> dict[str, list[str]]:
    """Each problem under the longest form key it names (``data.subsets[0].dir`` → ``data.subsets``; a top-level key
    such as ``resume`` only when written ``resume=``), else under ``GENERAL``."""
    by_key: dict[str, list[str]] = {}
    dotted = sorted((k for k in keys if "." in k), key=len, reverse=True)
    top = [k for k in keys if "." not in k]
    for problem in problems:
        found = next((k for k in dotted if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", problem)), None)
        if found is None:
            found = next((k for k in top if re.search(rf"(?<![\w.]){re.escape(k)}(?=[=.\[])", problem)), GENERAL)
        by_key.setdefault(found, []).append(problem)
    return by_key


def checked(conf_dir: Path, overrides: list[str], keys: list[str]) -> Composed:
    """Compose ``overrides`` and run the validation pass; problems by field key (see :func:`assign`)."""
    from omegaconf.errors import OmegaConfBaseException

    from sdlora.config.checks import check_config
    from sdlora.config.resolve import typed_config

    try:
        cfg, choices = compose(conf_dir, overrides)
    except Exception as exc:  # Hydra's composition errors (a bad value, an unknown key or option)
        message = _message(exc)
        key = re.search(r"full_key: ([\w.\[\]]+)", message)
        problems = {key.group(1): [message]} if key else assign([message], keys)
        return Composed(None, problems=_to_fields(problems, keys))
    try:
        check_config(typed_config(cfg))
    except SdloraError as exc:
        return Composed(cfg, choices, assign(exc.problems or [str(exc)], keys))
    except OmegaConfBaseException as exc:  # pragma: no cover - typed_config turns these into SdloraError
        return Composed(cfg, choices, {GENERAL: [str(exc)]})
    return Composed(cfg, choices)


def _to_fields(problems: dict[str, list[str]], keys: list[str]) -> dict[str, list[str]]:
    """Keys Hydra names (``data.subsets.0.dir``) onto the form's keys (their longest prefix), else ``GENERAL``."""
    result: dict[str, list[str]] = {}
    for key, messages in problems.items():
        target = next((k for k in sorted(keys, key=len, reverse=True) if key == k or key.startswith(f"{k}.")), None)
        result.setdefault(target if target is not None else GENERAL, []).extend(messages)
    return result


def plain(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted ``key`` as plain Python (enums as their names), or None where the key is not set."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value.value if isinstance(value, enum.Enum) else value
