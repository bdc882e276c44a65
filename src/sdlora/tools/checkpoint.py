"""A Stable Diffusion checkpoint as the tools read and write it: a single file or a diffusers folder.

Reading: the preset (``sd15``, ``sd2``, ``sd2_v``, ``sdxl``, ``tiny``, ``tiny_sd2_v``, ``tiny_sdxl``) is told from
the file's keys and the U-Net's first width (or a folder's ``model_index.json`` and U-Net config), or given with
``--model``; the components load through the family adapter (``family.load()``: offline, shipped configs and
tokenizers for single files). Their LoRA targets come from :func:`sdlora.tools.families.lora_targets`.

Writing a changed model (:func:`save_checkpoint`) keeps what the tool did not touch bit for bit:
- single file → single file: the original tensors are read again and only the touched ones are replaced, under the
  file's own keys (:mod:`sdlora.models.ldm_keys`: LDM/SGM names, OpenCLIP's fused q/k/v rows, SD2's 1×1-conv
  ``proj_in``), each in its stored dtype; the metadata and any other entries of a ``.ckpt`` stay;
- diffusers folder → diffusers folder: the folder is copied and the touched tensors replaced in the weight files that
  hold them (sharded and fp16-variant files alike);
- ``--format`` to the other kind converts the whole model (diffusers ``save_pretrained`` / an LDM single file).
``--save_precision`` casts every floating tensor, as kohya's. Outputs are written beside and renamed into place.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdlora.errors import SdloraError
from sdlora.models.presets import presets_of
from sdlora.tools import cli

log = logging.getLogger("sdlora")
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


@dataclass
class Checkpoint:
    """A loaded checkpoint: where it came from, its preset and family adapter, and the loaded components."""

    location: Path
    kind: str  # "file" | "folder"
    model: str
    family: Any
    components: Any  # sdlora.models.family.Components

    @property
    def layout(self) -> str:
        """The single-file key layout of this family: ``sd1``, ``sd2`` or ``sdxl``."""
        return "sdxl" if len(self.family.te_prefixes) == 2 else "sd2" if self.family.is_v2 else "sd1"

    def roots(self) -> dict[str, torch.nn.Module]:
        """Pipeline component name → module (``unet``, ``text_encoder``, ``text_encoder_2``)."""
        from sdlora.tools.families import component_name

        tes = {component_name(i): te for i, te in enumerate(self.components.text_encoders)}
        return {**tes, "unet": self.components.unet}

    def targets(self, conv: bool = True):
        from sdlora.tools.families import lora_targets

        return lora_targets(self.family, self.components.unet, self.components.text_encoders, conv)


# --------------------------------------------------------------------------------------------------- reading
def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of a single-file checkpoint, without reading the tensors."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    state = _torch_load(path, mmap=True)
    state = state.get("state_dict", state)
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _torch_load(path: Path, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if mmap:  # legacy (pre-zip) torch files cannot be memory-mapped
            return _torch_load(path)
        raise


def _first_width(model: str) -> int:
    from sdlora.models.configs import config_dir
    from sdlora.tools.families import family

    config = json.loads((config_dir(family(model).shipped_config) / "unet" / "config.json").read_text())
    return int(config["block_out_channels"][0])


def _pick(kind: str | None, width: int | None, v_pred: bool) -> str:
    """The preset of this layout whose U-Net is ``width`` wide (a real model when unknown); SD 2.x 512 (ε) and 768-v
    share an architecture, so the ``v_pred`` marker tells them apart."""
    from sdlora.tools.families import family

    kind = kind or "sd1"
    fitting = [m for m in presets_of(kind) if width is not None and _first_width(m) == width]
    fitting = fitting or list(presets_of(kind, tiny=False))
    return next((m for m in fitting if family(m).default_v_parameterization == v_pred), fitting[0])


def detect_model(location: Path, option: str) -> str:
    """The preset of a single file (keys, U-Net width, ``v_pred`` marker) or a diffusers folder (model index)."""
    from sdlora.models.sources import folder_kind, is_lora, single_file_kind

    if location.is_dir():
        try:
            kind = folder_kind(location)
        except SdloraError as exc:
            raise SdloraError(str(exc).replace("model.pretrained", option)) from None
        unet_config = location / "unet" / "config.json"
        width = json.loads(unet_config.read_text())["block_out_channels"][0] if unet_config.is_file() else None
        scheduler = location / "scheduler" / "scheduler_config.json"
        v_pred = scheduler.is_file() and json.loads(scheduler.read_text()).get("prediction_type") == "v_prediction"
        return _pick(kind, width, v_pred)
    try:
        shapes = file_shapes(location)
    except Exception as exc:
        raise SdloraError(f"{option}={str(location)!r} cannot be read as a checkpoint ({_first_line(exc)})") from None
    kind = single_file_kind(list(shapes))
    if kind is None:
        what = "a LoRA file, not a Stable Diffusion checkpoint" if is_lora(list(shapes)) else (
            "not a Stable Diffusion checkpoint")  # fmt: skip
        raise SdloraError(f"{option}={str(location)!r} is {what} (no SD 1.x, 2.x or SDXL model keys)")
    return _pick(kind, shapes.get(CONV_IN, (None,))[0], "v_pred" in shapes)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def open_checkpoint(
    value: str | Path,
    option: str,
    model: str | None = None,
    dtype: torch.dtype = torch.float32,
    v_parameterization: bool | None = None,
    config: str | None = None,
) -> Checkpoint:
    """Load the checkpoint at ``value`` (a file or a diffusers folder; never a hub id) in ``dtype``."""
    from sdlora.tools.families import family

    location = Path(value).expanduser()
    if not location.exists():
        raise SdloraError(f"{option}={str(value)!r} does not exist")
    if location.is_file() and location.suffix.lower() not in FILE_SUFFIXES:
        raise SdloraError(f"{option}={str(value)!r} must be a {' / '.join(FILE_SUFFIXES)} file or a diffusers folder")
    model = model or detect_model(location, option)
    fam = family(model, pretrained=str(location), v_parameterization=v_parameterization, config=config)
    log.info("loading %s (%s)", location, model)
    try:
        components = fam.load(weight_dtype=dtype, vae_dtype=dtype)
    except SdloraError as exc:
        raise SdloraError(f"{option}: {exc}".replace("model.pretrained=", "")) from None
    return Checkpoint(location, "folder" if location.is_dir() else "file", model, fam, components)


def stored_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The dtype the checkpoint stores its U-Net in (the default dtype when converting to the other format)."""
    if ckpt.kind == "file":
        if ckpt.location.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(ckpt.location), framework="pt") as f:
                return _DTYPES.get(f.get_slice(CONV_IN).get_dtype(), torch.float32)
        state = _torch_load(ckpt.location, mmap=True)
        return state.get("state_dict", state)[CONV_IN].dtype
    files = sorted((ckpt.location / "unet").glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        with safe_open(str(files[0]), framework="pt") as f:
            return _DTYPES.get(f.get_slice(next(iter(f.keys()))).get_dtype(), torch.float32)
    return torch.float32


# --------------------------------------------------------------------------------------------------- writing
def _put(state: dict[str, torch.Tensor], slot: Any, value: torch.Tensor, where: str) -> None:
    """Write ``value`` (a diffusers tensor) into its slot of an original-format state dict, in the stored dtype."""
    if slot.key not in state:
        raise SdloraError(f"{where} has no tensor {slot.key}: is --model right for this checkpoint?")
    old = state[slot.key]
    if slot.rows is not None:
        start, stop = slot.rows
        new = old.clone()
        new[start:stop] = value.reshape(stop - start, *old.shape[1:]).to(old.dtype)
    elif slot.transposed:
        new = value.T.reshape(old.shape).to(old.dtype)
    else:
        new = value.reshape(old.shape).to(old.dtype)
    state[slot.key] = new.contiguous()


def _cast(state: dict, dtype: torch.dtype | None) -> None:
    if dtype is not None:
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                state[key] = value.to(dtype)


def _touched_values(ckpt: Checkpoint, touched: Iterable[tuple[str, str]]) -> dict[str, dict[str, torch.Tensor]]:
    """component → {state-dict key → current value} for the touched tensors."""
    roots = ckpt.roots()
    out: dict[str, dict[str, torch.Tensor]] = {}
    for component, key in touched:
        state = out.setdefault(component, {})
        state[key] = roots[component].get_parameter(key).detach().cpu()
    return out


def _write_file(ckpt: Checkpoint, values: dict, out: Path, save_dtype: torch.dtype | None) -> Path:
    from sdlora.models.ldm_keys import checkpoint_slots
    from sdlora.utils.atomic import atomic_write

    slots = checkpoint_slots(unet=ckpt.components.unet, text_encoders=ckpt.components.text_encoders,
                             layout=ckpt.layout)  # fmt: skip
    where = str(ckpt.location)
    if ckpt.location.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        state = load_file(str(ckpt.location))
        with safe_open(str(ckpt.location), framework="pt") as f:
            metadata = f.metadata()
        container = None
    else:
        container = _torch_load(ckpt.location)
        state = container.get("state_dict", container)
    for component, tensors in values.items():
        for key, value in tensors.items():
            _put(state, slots[component][key], value, where)
    _cast(state, save_dtype)
    if out.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        return atomic_write(
            out, lambda tmp: save_file(state, str(tmp), metadata=metadata if container is None else None)
        )
    return atomic_write(out, lambda tmp: torch.save(container if container is not None else state, tmp))


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())


def _rewrite(file: Path, values: dict[str, torch.Tensor], found: set[str], save_dtype: torch.dtype | None) -> None:
    """Replace the keys of ``values`` that ``file`` holds (with or without ``text_model.``), in place."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        state = load_file(str(file))
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata()
    else:
        state, metadata = _torch_load(file), None
    changed = save_dtype is not None
    for key, value in values.items():
        for candidate in (key, f"text_model.{key}", key.removeprefix("text_model.")):
            if candidate in state:
                state[candidate] = value.reshape(state[candidate].shape).to(state[candidate].dtype).contiguous()
                found.add(key)
                changed = True
                break
    _cast(state, save_dtype)
    if changed:
        if file.suffix == ".safetensors":
            save_file(state, str(file), metadata=metadata)
        else:
            torch.save(state, file)


def _write_folder(ckpt: Checkpoint, values: dict, out: Path, save_dtype: torch.dtype | None) -> Path:
    from sdlora.utils.atomic import atomic_folder

    with atomic_folder(out) as tmp:
        shutil.copytree(ckpt.location, tmp, dirs_exist_ok=True)
        for sub in sorted(p for p in tmp.iterdir() if p.is_dir()):
            tensors = values.get(sub.name, {})
            if not tensors and save_dtype is None:
                continue
            found: set[str] = set()
            for file in _weight_files(sub):
                _rewrite(file, tensors, found, save_dtype)
            missing = sorted(set(tensors) - found)
            if missing:
                raise SdloraError(f"{ckpt.location}/{sub.name} holds no weight file with {missing[0]}")
    return out


def _scheduler(ckpt: Checkpoint):
    import diffusers

    from sdlora.models.configs import config_dir

    folder = ckpt.location if ckpt.kind == "folder" else config_dir(ckpt.family.shipped_config)
    class_name = json.loads((folder / "model_index.json").read_text())["scheduler"][1]
    return getattr(diffusers, class_name).from_pretrained(folder, subfolder="scheduler")


def write_components(ckpt: Checkpoint, out: Path, fmt: str, dtype: torch.dtype) -> Path:
    """The whole loaded model as a diffusers folder (``fmt="diffusers"``) or an LDM single file, in ``dtype``."""
    from sdlora.models.ldm_keys import write_checkpoint
    from sdlora.utils.atomic import atomic_folder

    c = ckpt.components
    for module in (c.unet, c.vae, *c.text_encoders):
        module.to(dtype)
    if fmt == "single_file":
        return write_checkpoint(out, unet=c.unet, vae=c.vae, text_encoders=c.text_encoders, layout=ckpt.layout)
    pipe = ckpt.family.sample_pipeline(c, _scheduler(ckpt))
    with atomic_folder(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return out


def save_checkpoint(
    ckpt: Checkpoint, touched: Iterable[tuple[str, str]], out: Path, fmt: str | None, save_dtype: torch.dtype | None
) -> Path:
    """Write the checkpoint with its ``touched`` tensors ((component, state-dict key) pairs) changed; ``fmt``
    ``single_file``/``diffusers`` (None: the kind it was read as). See the module docstring."""
    same = fmt is None or fmt == {"file": "single_file", "folder": "diffusers"}[ckpt.kind]
    if not same:
        return write_components(ckpt, out, fmt, save_dtype or stored_dtype(ckpt))
    values = _touched_values(ckpt, touched)
    if ckpt.kind == "file":
        return _write_file(ckpt, values, out, save_dtype)
    return _write_folder(ckpt, values, out, save_dtype)


def output_for(ckpt_value: str | Path, save_to: str | Path, fmt: str | None, inputs: list) -> tuple[Path, str]:
    """Check ``--save_to`` for the output kind (a file with a checkpoint suffix, or a new folder)."""
    source = Path(ckpt_value).expanduser()
    kind = fmt or ("diffusers" if source.is_dir() else "single_file")
    if kind == "single_file":
        return cli.output_path(save_to, "--save_to", inputs, FILE_SUFFIXES), kind
    return cli.output_path(save_to, "--save_to", inputs, folder=True), kind
