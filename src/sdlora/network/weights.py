"""Start training from an existing LoRA file [kohya: network_weights] (docs/kohya.md §8.3).

Every module of the file is created with the file's rank (``lora_down``'s first dimension) and alpha (the rank when
the file has none, as kohya reads old files) and starts from the file's values, so the scale alpha/rank is the
file's. kohya instead builds the modules from ``network_dim``/``network_alpha`` and only overwrites the alpha buffer,
leaving the scale at the configured value — a silent mismatch we do not copy. Modules the config asks for that the
file lacks are created fresh from the config. A file module whose layer is on a side that is not trained
(``network.train_unet``/``train_text_encoder`` false) is left out with a warning; a module name the model does not
have, or a shape that does not fit its layer, is an error naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.network.module import NetworkModule
from sdlora.network.naming import ALPHA, LORA_DOWN, LORA_UP

log = logging.getLogger("sdlora")

SUFFIXES = (".safetensors", ".ckpt", ".pt")
_DOWN, _UP, _ALPHA = f".{LORA_DOWN}", f".{LORA_UP}", f".{ALPHA}"


def _keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    try:  # mmap: only the key names are read from a large zip-format file
        return list(torch.load(path, map_location="cpu", weights_only=True, mmap=True).keys())
    except RuntimeError:  # legacy (pre-zip) torch files cannot be memory-mapped
        return list(torch.load(path, map_location="cpu", weights_only=True).keys())


def check_lora_file(location: str, option: str = "network.weights") -> str | None:
    """A problem with ``location`` as a kohya LoRA file (missing, unreadable, no LoRA tensors), or None if it is one.

    Reads only the key names (the header for .safetensors), so it is cheap enough for config validation.
    """
    path = Path(location).expanduser()
    if not path.is_file():
        return f"{option}={location!r} does not exist or is not a file"
    if path.suffix not in SUFFIXES:
        return f"{option}={location!r}: a LoRA file must be {', '.join(SUFFIXES)}"
    try:
        keys = _keys(path)
    except Exception as exc:  # any reader error means the file is not usable
        return f"{option}={location!r} cannot be read as a {path.suffix} file ({str(exc).splitlines()[0][:200]})"
    downs = {k.removesuffix(_DOWN) for k in keys if k.endswith(_DOWN)}
    ups = {k.removesuffix(_UP) for k in keys if k.endswith(_UP)}
    kohya = {n for n in downs & ups if n.startswith(("lora_unet_", "lora_te"))}
    if not kohya:
        return (
            f"{option}={location!r} is not a LoRA file in kohya's format (no '<lora_unet_…|lora_te…>.lora_down.weight'"
            " / '.lora_up.weight' pairs)"
        )
    if downs != ups:
        unpaired = sorted(downs ^ ups)[:3]
        return f"{option}={location!r} has lora_down/lora_up tensors without their partner: {unpaired}"
    return None


@dataclass(frozen=True)
class FileModule:
    down: torch.Tensor  # [r, in] or [r, in, kh, kw]
    up: torch.Tensor  # [out, r] or [out, r, 1, 1]
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]


class InitialWeights:
    """The modules of a LoRA file, by kohya name."""

    def __init__(self, location: str) -> None:
        from sdlora.network.io import load_lora

        problem = check_lora_file(location)
        if problem:
            raise SdloraError(problem)
        self.location = location
        tensors, _ = load_lora(Path(location).expanduser())
        names = sorted({k.removesuffix(_DOWN) for k in tensors if k.endswith(_DOWN)})
        self.modules: dict[str, FileModule] = {}
        for name in names:
            down, up = tensors[f"{name}{_DOWN}"], tensors[f"{name}{_UP}"]
            alpha = tensors.get(f"{name}{_ALPHA}")
            if up.shape[1] != down.shape[0]:
                raise SdloraError(
                    f"network.weights={location!r}: module {name} has lora_down of rank {down.shape[0]} but lora_up "
                    f"of rank {up.shape[1]}; the file is damaged"
                )
            self.modules[name] = FileModule(down, up, float(alpha) if alpha is not None else float(down.shape[0]))

    def check_names(self, known: set[str], trained: set[str]) -> None:
        """Unknown module names are an error; modules on sides that are not trained are dropped with a warning."""
        unknown = sorted(set(self.modules) - known)
        if unknown:
            raise SdloraError(
                f"network.weights={self.location!r} has {len(unknown)} module(s) this model does not have, e.g. "
                f"{', '.join(unknown[:3])}: was it trained for another model family (model=sd15/sd2/sdxl)?"
            )
        dropped = sorted(set(self.modules) - trained)
        if dropped:
            log.warning(
                "network.weights: %d module(s) of the file are on a side that is not trained (e.g. %s); they are "
                "left out and will not be in the saved LoRA (set network.train_unet / network.train_text_encoder)",
                len(dropped), dropped[0],
            )  # fmt: skip

    @torch.no_grad()
    def load_into(self, name: str, module: NetworkModule) -> None:
        """Copy the file's tensors of ``name`` into ``module`` (built with the file's rank and alpha)."""
        source = self.modules[name]
        tensors = {LORA_DOWN: source.down, LORA_UP: source.up, ALPHA: torch.tensor(source.alpha)}
        try:
            module.load_file_tensors(tensors)
        except ValueError as exc:
            raise SdloraError(
                f"network.weights={self.location!r}: {name}.{exc}: the file was trained for a model of another "
                "family or size"
            ) from None
