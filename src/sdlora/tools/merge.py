"""Merge LoRAs into a checkpoint, or into one LoRA [kohya: networks/merge_lora.py, sdxl_merge_lora.py; the GUI's
"Merge LoRA"].

With ``--sd_model`` (a single file or a diffusers folder of any family): every module's base weight becomes
W ← W + ρ·(alpha/rank)·up∘down for each LoRA in turn (negative ratios allowed), computed in ``--precision``; the
result is written in the form it was read (a single file with its own keys, or a diffusers folder) unless ``--format``
says otherwise, and every tensor no LoRA touches stays bit-identical (:mod:`sdlora.tools.checkpoint`). A LoRA whose
modules the checkpoint does not have (another family) is an error naming them.

Without ``--sd_model`` the LoRAs become one LoRA (:mod:`sdlora.tools.combine`): ``--concat`` concatenates the ranks
(exactly the sum of the ratio-weighted updates), otherwise modules of equal rank are summed tensor by tensor as kohya
does (with the ratio applied once and its sign kept; kohya v21.8.8 squared it).

    sdlora-merge-lora --sd_model sd15.safetensors --models style.safetensors --ratios 0.8 --save_to merged.safetensors
    sdlora-merge-lora --models a.safetensors b.safetensors --ratios 1 -0.5 --concat --save_to ab.safetensors
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")
FORMATS = ("single_file", "diffusers")


def check_family(loras, targets: dict, where: str, model: str) -> None:
    """Every LoRA module must be a target of the checkpoint, with tensors that fit its layer."""
    from sdlora.models.presets import DISPLAY
    from sdlora.tools.families import fits, identify

    for lora in loras:
        unknown = sorted(n for n in lora.modules if n not in targets)
        if unknown:
            other = identify(lora.shapes())
            guess = f" (it looks like a {DISPLAY[other]} LoRA)" if other else ""
            raise SdloraError(
                f"{lora.path.name} has {len(unknown)} module(s) that {where} ({DISPLAY[model]}) does not have, e.g. "
                f"{unknown[0]}{guess}: a LoRA of another model family"
            )
        for name, module in lora.modules.items():
            if not fits(module.down.shape, module.up.shape, targets[name].shape):
                raise SdloraError(
                    f"{lora.path.name}: module {name} has tensors {tuple(module.down.shape)} / {tuple(module.up.shape)}"
                    f" that do not fit the layer {targets[name].shape} of {where}: a LoRA of another model"
                )


def merge_into_checkpoint(
    sd_model: str | Path,
    models: list[str],
    ratios: list[float] | None,
    save_to: str | Path,
    precision: str = "float",
    save_precision: str | None = None,
    fmt: str | None = None,
    model: str | None = None,
) -> Path:
    """Write ``sd_model`` with the LoRAs merged into its weights (see the module docstring)."""
    import torch

    from sdlora.tools.checkpoint import open_checkpoint, output_for, save_checkpoint
    from sdlora.tools.svd_merge import read_models

    loras, ratios = read_models(models, ratios)
    out, kind = output_for(sd_model, save_to, fmt, [sd_model, *models])
    ckpt = open_checkpoint(sd_model, "--sd_model", model=model, dtype=cli.dtype(precision))
    targets = ckpt.targets(conv=True)
    check_family(loras, targets, Path(sd_model).name, ckpt.model)
    touched: set[tuple[str, str]] = set()
    with torch.no_grad():
        for lora, ratio in zip(loras, ratios, strict=True):
            for name, module in cli.progress(lora.modules.items(), f"merging {lora.path.name}", len(lora.modules)):
                target = targets[name]
                weight = target.target.module.weight
                weight += module.delta(ratio).reshape(weight.shape).to(weight.dtype)
                touched.add((target.component, f"{target.target.path}.weight"))
    save_checkpoint(ckpt, touched, out, kind, cli.dtype(save_precision))
    log.info("merged %d LoRA(s) into %d weights of %s: %s", len(loras), len(touched), Path(sd_model).name, out)
    return out


def merge_loras(
    models: list[str], ratios: list[float] | None, save_to: str | Path, concat: bool = False,
    save_precision: str | None = None, no_metadata: bool = False,
) -> Path:  # fmt: skip
    """Write the LoRAs merged into one LoRA (see :mod:`sdlora.tools.combine`)."""
    from sdlora.tools.combine import concat as concat_modules
    from sdlora.tools.combine import weighted_sum
    from sdlora.tools.lora_file import network_metadata, source_model, write_lora
    from sdlora.tools.svd_merge import read_models

    loras, ratios = read_models(models, ratios)
    out = cli.output_path(save_to, "--save_to", [lora.path for lora in loras], cli.LORA_SUFFIXES)
    merged = concat_modules(loras, ratios) if concat else weighted_sum(loras, ratios)
    meta = network_metadata(merged, source_model(loras[0]), out.stem, [lora.path.stem for lora in loras])
    if no_metadata:
        meta = {k: v for k, v in meta.items() if not k.startswith("modelspec.")}
    write_lora(out, merged, meta, cli.dtype(save_precision or "float"))
    log.info("merged %d LoRAs (%s) into %s", len(loras), "concatenated ranks" if concat else "weighted sum", out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Merge LoRAs into a Stable Diffusion checkpoint (single file or diffusers folder), or into one LoRA "
        "(kohya's networks/merge_lora.py and sdxl_merge_lora.py).",
        "  sdlora-merge-lora --sd_model sd15.safetensors --models style.safetensors --ratios 0.8 \\\n"
        "      --save_to merged.safetensors\n"
        "  sdlora-merge-lora --sd_model /models/sdxl-diffusers --models a.safetensors b.safetensors \\\n"
        "      --ratios 1 -0.3 --save_to /models/sdxl-merged\n"
        "  sdlora-merge-lora --models a.safetensors b.safetensors --ratios 1 1 --concat --save_to ab.safetensors\n",
    )
    p.add_argument("--sd_model", default=None, help="checkpoint (.safetensors/.ckpt or diffusers folder); "
                   "without it the LoRAs are merged into one LoRA")  # fmt: skip
    p.add_argument("--models", nargs="+", required=True, help="LoRA files (kohya format)")
    p.add_argument("--ratios", nargs="+", type=float, default=None, help="one ratio per LoRA (default: all 1)")
    p.add_argument("--save_to", required=True, help="output: a file, or a new folder for a diffusers checkpoint")
    p.add_argument("--precision", choices=["float", "fp16", "bf16"], default="float",
                   help="dtype the checkpoint is merged in")  # fmt: skip
    p.add_argument(
        "--save_precision",
        choices=["float", "fp32", "fp16", "bf16"],
        default=None,
        help="cast every saved tensor (default: a checkpoint keeps each tensor's dtype; a LoRA is float)",
    )
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="checkpoint output form (default: the form --sd_model has)")  # fmt: skip
    p.add_argument("--model", choices=cli.PRESETS, default=None, help="the checkpoint's preset (default: detected)")
    p.add_argument("--concat", action="store_true", help="LoRA merge: concatenate ranks (exact; rank = sum)")
    p.add_argument("--no_metadata", action="store_true", help="LoRA merge: no modelspec.* (the ss_* minimum stays)")
    p.add_argument(
        "--v2",
        dest="ignored",
        action="store_true",
        help="accepted for kohya's script; sdlora tells the family from the checkpoint (or --model)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        if args.sd_model is None:
            if args.format or args.model:
                raise SdloraError("--format and --model need --sd_model (a checkpoint to merge into)")
            merge_loras(args.models, args.ratios, args.save_to, args.concat, args.save_precision, args.no_metadata)
            return
        if args.concat:
            raise SdloraError("--concat merges LoRAs into one LoRA: leave out --sd_model, or leave out --concat")
        merge_into_checkpoint(args.sd_model, args.models, args.ratios, args.save_to, args.precision,
                              args.save_precision, args.format, args.model)  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
