"""Start training from an existing network file [kohya: network_weights] (docs/kohya.md §8.3).

The file must be of the configured type's format (:data:`sdlora.network.types.TYPES`' ``file_format``; a LyCORIS
type also takes the ``w_norm``/``b_norm`` modules of ``train_norm``): a LoHa file with ``network=lokr`` is an error
naming both. Every module of the file is created with the file's rank (the tensor that carries it: ``lora_down``'s,
``hada_w1_b``'s, … first dimension) and alpha (the rank when the file has none, as kohya reads old files) and starts
from the file's values, so the scale alpha/rank is the file's. kohya instead builds the modules from
``network_dim``/``network_alpha`` and only overwrites the alpha buffer, leaving the scale at the configured value — a
silent mismatch we do not copy. The other options (Tucker, DoRA, LoKr factor, …) come from the config; a file whose
tensors they do not produce is an error naming the module and the tensors. Modules the config asks for that the file
lacks are created fresh from the config. A file module whose layer is on a side that is not trained
(``network.train_unet``/``train_text_encoder`` false) is left out with a warning; a module name the model does not
have, or a shape that does not fit its layer, is an error naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.errors import SdloraError
from sdlora.network.module import NetworkModule
from sdlora.network.types import FORMAT_NAMES, type_info

log = logging.getLogger("sdlora")

SUFFIXES = (".safetensors", ".ckpt", ".pt")
#: The tensors that mark each format, and those that must come together.
_MARKERS = (
    ("lora", ("lora_up.weight", "lora_down.weight")),
    ("loha", ("hada_w1_a", "hada_w1_b")),
    ("lokr", ("lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a")),
    ("ia3", ("on_input",)),
    ("glora", ("a1.weight",)),
    ("full", ("diff",)),
    ("norm", ("w_norm",)),
    ("oft", ("oft_blocks",)),
)
_PAIRS = {"lora": ("lora_down.weight", "lora_up.weight"), "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
          "glora": ("a1.weight", "a2.weight", "b1.weight", "b2.weight")}  # fmt: skip
#: The tensor whose first dimension is the module's rank, per format (LoKr: the decomposed factor's).
_RANK_FROM = {"lora": ("lora_down.weight",), "loha": ("hada_w1_b",), "lokr": ("lokr_w2_b", "lokr_w1_b"),
              "glora": ("a2.weight",)}  # fmt: skip


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, reading only the header of a .safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    try:  # mmap: only what is needed is read from a large zip-format file
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zip) torch files cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def module_format(suffixes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The format of one module's tensors (suffix → shape): ``lora``, ``loha``, …, or None if none fits."""
    for name, markers in _MARKERS:
        if any(m in suffixes for m in markers):
            if name == "oft" and len(suffixes["oft_blocks"]) == 4:
                return "boft"
            return name
    return None


def group_modules(keys: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """``<name>.<suffix>`` keys by module name (kohya names hold no dot)."""
    modules: dict[str, dict[str, object]] = {}
    for key, value in keys.items():
        name, dot, suffix = key.partition(".")
        if dot and name.startswith(("lora_unet_", "lora_te")):
            modules.setdefault(name, {})[suffix] = value
    return modules


def allowed_formats(network_type: NetworkType) -> set[str]:
    info = type_info(network_type)
    return {info.file_format, "norm"} if info.lycoris else {info.file_format}


def check_network_file(location: str, network_type: NetworkType = NetworkType.lora,
                       option: str = "network.weights") -> str | None:  # fmt: skip
    """A problem with ``location`` as a ``network_type`` file (missing, unreadable, no network tensors, another
    type's format), or None. Reads only key names and shapes, cheap enough for config validation."""
    path = Path(location).expanduser()
    if not path.is_file():
        return f"{option}={location!r} does not exist or is not a file"
    if path.suffix not in SUFFIXES:
        return f"{option}={location!r}: a network file must be {', '.join(SUFFIXES)}"
    try:
        modules = group_modules(_shapes(path))
    except Exception as exc:  # any reader error means the file is not usable
        return f"{option}={location!r} cannot be read as a {path.suffix} file ({str(exc).splitlines()[0][:200]})"
    formats = {name: module_format(suffixes) for name, suffixes in modules.items()}
    if not any(formats.values()):
        return (
            f"{option}={location!r} is not a LoRA file in kohya's format (no '<lora_unet_…|lora_te…>."
            "lora_down.weight' / '.lora_up.weight' pairs, nor LyCORIS's hada_*, lokr_*, oft_blocks, … tensors)"
        )
    for name, fmt in formats.items():
        missing = [s for s in _PAIRS.get(fmt or "", ()) if s not in modules[name]]
        if fmt is None or missing:
            return f"{option}={location!r}: module {name} has {sorted(modules[name])} without {missing or 'a format'}"
    wrong = sorted({fmt for fmt in formats.values()} - allowed_formats(network_type))
    if wrong:
        expected = FORMAT_NAMES[type_info(network_type).file_format]
        return (f"{option}={location!r} holds {', '.join(FORMAT_NAMES[f] for f in wrong)} modules, but "
                f"network={NetworkType(network_type).value} writes {expected} modules: pick the network type the file "
                "was trained with")  # fmt: skip
    return None


class InitialWeights:
    """The modules of a network file, by kohya name."""

    def __init__(self, location: str, cfg: NetworkConfig) -> None:
        from sdlora.network.io import load_lora

        problem = check_network_file(location, cfg.name)
        if problem:
            raise SdloraError(problem)
        self.location, self.cfg = location, cfg
        tensors, _ = load_lora(Path(location).expanduser())
        self.modules: dict[str, dict[str, torch.Tensor]] = group_modules(tensors)  # type: ignore[assignment]

    def rank_alpha(self, name: str) -> tuple[int | None, float | None]:
        """The module's rank and the alpha to build it with (the file's; alpha/rank is what the file means)."""
        tensors = self.modules[name]
        fmt = module_format({k: tuple(v.shape) for k, v in tensors.items()})
        sources = [tensors[k] for k in _RANK_FROM.get(fmt or "", ()) if k in tensors]
        rank = sources[0].shape[0] if sources else self.cfg.rank
        if fmt == "lora" and "lora_up.weight" in tensors and tensors["lora_up.weight"].shape[1] != rank:
            raise SdloraError(
                f"network.weights={self.location!r}: module {name} has lora_down of rank {rank} but lora_up of rank "
                f"{tensors['lora_up.weight'].shape[1]}; the file is damaged"
            )
        if "alpha" not in tensors or not type_info(self.cfg.name).has_alpha:
            return rank, (None if "alpha" not in tensors else self.cfg.alpha)
        alpha = float(tensors["alpha"])
        if self.cfg.rs_lora and rank:  # LyCORIS stores alpha·√rank with rs_lora; it is built with alpha
            alpha = alpha / math.sqrt(rank)
        return rank, alpha

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
        tensors = dict(self.modules[name])
        expected = set(module.file_tensors())
        if "alpha" in expected and "alpha" not in tensors:
            tensors["alpha"] = module.file_tensors()["alpha"].detach().clone()  # an old file: alpha = rank
        if set(tensors) != expected:
            raise SdloraError(
                f"network.weights={self.location!r}: module {name} has {sorted(tensors)} but network="
                f"{self.cfg.name.value} with these options makes {sorted(expected)} (set the options the file was "
                "trained with: use_tucker, weight_decompose, factor, decompose_both, rescaled, …)"
            )
        try:
            module.load_file_tensors(tensors)
        except ValueError as exc:
            raise SdloraError(
                f"network.weights={self.location!r}: {name}.{exc}: the file was trained for a model of another "
                "family or size, or with other network options"
            ) from None
