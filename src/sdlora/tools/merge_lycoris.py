"""Merge a LyCORIS file (LoCon, LoHa, LoKr, (IA)³, DyLoRA, full, GLoRA, OFT/BOFT, DoRA …) into a checkpoint
[LyCORIS: tools/merge.py, the kohya_ss GUI's "Merge LyCORIS"].

Each module of the file is rebuilt by lycoris-lora itself (``lycoris.modules.get_module`` / ``make_module`` on the
checkpoint's layer, found by its kohya name: :mod:`sdlora.tools.names`) and its merged weight is lycoris-lora's
``get_merged_weight(--weight)``: W′ = W + weight·ΔW for the additive types, LyCORIS's own rule for (IA)³, OFT and
DoRA (two lycoris-lora 4.1 slips are worked around: :data:`FORWARD_RULE`, :func:`make`). A DyLoRA file is merged as
the LoRA it is saved as (full rank, scale alpha/rank), as the web UIs apply it. The checkpoint is written in the form
it was read and every other tensor stays bit-identical (:mod:`sdlora.tools.checkpoint`). ``--dtype`` casts the saved
model (LyCORIS's script saves float by default; sdlora keeps each tensor's dtype unless asked).

    sdlora-merge-lycoris --sd_model sd15.safetensors --lycoris_model loha.safetensors --save_to merged.safetensors
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")
#: lycoris-lora 4.1's LoHa and LoKr ``get_diff_weight`` multiply by alpha/rank although ``get_weight`` already did, so
#: their own merge applies the scale twice; their forward (what training and the web UIs compute) applies it once.
#: These are merged with the forward's rule on lycoris-lora's ``get_weight`` (docs/tools.md).
FORWARD_RULE = ("LohaModule", "LokrModule")


def _read(value: str | Path):
    from sdlora.network.io import load_lora

    path = cli.existing_file(value, "--lycoris_model", cli.LORA_SUFFIXES)
    try:
        tensors, _ = load_lora(path)
    except Exception as exc:
        raise SdloraError(f"--lycoris_model={str(value)!r} cannot be read ({str(exc).splitlines()[0][:200]})") from None
    names = sorted({key.split(".", 1)[0] for key in tensors if "." in key})
    if not names:
        raise SdloraError(f"--lycoris_model={str(value)!r} holds no LyCORIS or LoRA modules")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    for name in names:  # lycoris-lora's DyLoRA saves a conv's lora_up as [out, r]: kohya's form is [out, r, 1, 1]
        up, down = tensors.get(f"{name}.lora_up.weight"), tensors.get(f"{name}.lora_down.weight")
        if up is not None and down is not None and up.dim() == 2 and down.dim() == 4:
            tensors[f"{name}.lora_up.weight"] = up.reshape(*up.shape, 1, 1)
    return path, tensors, names


def make(algo, params: tuple, name: str, module):
    """lycoris-lora's module for ``name`` on ``module`` (its ``make_module``). lycoris-lora 4.1 passes (IA)³'s two
    tensors (weight, on_input) to a constructor that takes one, so (IA)³ is built here with the same arguments."""
    from lycoris.modules import make_module

    if algo.__name__ != "IA3Module":
        return make_module(algo, params, name, module)
    weight, on_input = params
    lyco = algo(name, module, 1, train_on_input=bool(on_input is not None and on_input.any()))
    lyco.weight.data.copy_(weight)
    return lyco


def merged_weight(lyco, shape, multiplier: float, device: str):
    """(W′, bias′ or None) of a lycoris-lora module for ``multiplier`` (see :data:`FORWARD_RULE`)."""
    if type(lyco).__name__ not in FORWARD_RULE:
        return lyco.get_merged_weight(multiplier=multiplier, shape=shape, device=device)
    base = lyco.org_weight.to(device)
    diff = lyco.get_weight(shape).to(device, base.dtype) * lyco.scalar.to(device, base.dtype)  # ΔW, scale once
    if lyco.wd:
        return lyco.apply_weight_decompose(base + diff, multiplier), None
    return base + diff * multiplier, None


def merge_lycoris(
    sd_model: str | Path,
    lycoris_model: str | Path,
    save_to: str | Path,
    weight: float = 1.0,
    dtype: str | None = None,
    device: str = "cpu",
    model: str | None = None,
    fmt: str | None = None,
) -> Path:
    """Write ``sd_model`` with the LyCORIS file merged (see the module docstring)."""
    import torch
    from lycoris.modules import get_module

    from sdlora.models.presets import DISPLAY
    from sdlora.tools.checkpoint import open_checkpoint, output_for, save_checkpoint
    from sdlora.tools.names import all_module_names

    path, tensors, names = _read(lycoris_model)
    out, kind = output_for(sd_model, save_to, fmt, [sd_model, path])
    ckpt = open_checkpoint(sd_model, "--sd_model", model=model)
    table = all_module_names(ckpt.family, ckpt.roots())
    unknown = [n for n in names if n not in table]
    if unknown:
        hint = " (lycoris-lora's own 'lycoris_' names: sdlora-fix-lora renames them)" if unknown[0].startswith(
            "lycoris_") else ": a file for another model family"  # fmt: skip
        raise SdloraError(f"{path.name} has {len(unknown)} module(s) that {Path(sd_model).name} "
                          f"({DISPLAY[ckpt.model]}) does not have, e.g. {unknown[0]}{hint}")  # fmt: skip
    touched: set[tuple[str, str]] = set()
    with torch.no_grad():
        for name in cli.progress(names, "merging", len(names)):
            target = table[name]
            algo, params = get_module(tensors, name)
            lyco = make(algo, params, name, target.module) if algo is not None else None
            if lyco is None:
                raise SdloraError(f"{path.name}: module {name} is no LyCORIS type lycoris-lora can merge")
            module = target.module
            merged, bias = merged_weight(lyco.eval(), module.weight.shape, weight, device)
            module.weight.copy_(merged.to(module.weight.dtype))
            touched.add((target.component, f"{target.path}.weight"))
            if bias is not None:
                module.bias.copy_(bias.to(module.bias.dtype))
                touched.add((target.component, f"{target.path}.bias"))
    save_checkpoint(ckpt, touched, out, kind, cli.dtype(dtype))
    log.info("merged %d LyCORIS modules (weight %g) into %s: %s", len(names), weight, Path(sd_model).name, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Merge a LyCORIS file (LoCon, LoHa, LoKr, IA3, DyLoRA, full, GLoRA, OFT, DoRA …) into a checkpoint with "
        "lycoris-lora's own maths (LyCORIS's tools/merge.py).",
        "  sdlora-merge-lycoris --sd_model sd15.safetensors --lycoris_model loha.safetensors \\\n"
        "      --save_to merged.safetensors --weight 0.8\n"
        "  sdlora-merge-lycoris --sd_model /models/sdxl --lycoris_model lokr.safetensors --save_to /models/sdxl-lokr\n",
    )
    p.add_argument("--sd_model", required=True, help="checkpoint (.safetensors/.ckpt or diffusers folder)")
    p.add_argument("--lycoris_model", required=True, help="the LyCORIS (or LoRA) file, kohya names")
    p.add_argument("--save_to", required=True, help="output: a file, or a new folder for a diffusers checkpoint")
    p.add_argument("--weight", type=float, default=1.0, help="multiplier of the LyCORIS update")
    p.add_argument("--dtype", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="cast every saved tensor (default: keep each tensor's dtype)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="device for the merge maths")
    p.add_argument("--format", choices=("single_file", "diffusers"), default=None,
                   help="output form (default: the form --sd_model has)")  # fmt: skip
    p.add_argument("--model", choices=cli.PRESETS, default=None, help="the checkpoint's preset (default: detected)")
    p.add_argument(
        "--is_v2",
        "--is_sdxl",
        dest="ignored",
        action="store_true",
        help="accepted for LyCORIS's script; sdlora tells the family from the checkpoint (or --model)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        merge_lycoris(args.sd_model, args.lycoris_model, args.save_to, args.weight, args.dtype, args.device,
                      args.model, args.format)  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
