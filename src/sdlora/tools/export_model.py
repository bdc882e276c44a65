"""Export the tiny models (``model=tiny``, ``tiny_sd2_v``, ``tiny_sdxl``) as a single-file checkpoint or a diffusers
folder.

The tiny families build SD1.5-, SD 2.x-v- and SDXL-shaped models from shipped configs with seeded random weights;
exported, they let every LoRA tool (merge, extract, …) and ``model.pretrained=`` be tried offline in seconds. A single
file uses the original (LDM/SGM) keys of :mod:`sdlora.models.ldm_keys`; a folder is diffusers' ``save_pretrained``
layout.

    sdlora-export-model --model tiny --save_to tiny.safetensors
    sdlora-export-model --model tiny_sdxl --save_to tiny_sdxl_diffusers --format diffusers --init_seed 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.models.presets import TINY
from sdlora.tools import cli

log = logging.getLogger("sdlora")


def export_model(
    model: str, save_to: str | Path, fmt: str | None = None, init_seed: int = 0, save_precision: str | None = None
) -> Path:
    """Write the tiny ``model`` with random weights from ``init_seed`` (format from ``fmt`` or the path's suffix)."""
    import torch

    from sdlora.tools.checkpoint import FILE_SUFFIXES, Checkpoint, write_components
    from sdlora.tools.families import family

    if model not in TINY:
        raise SdloraError(f"--model {model}: only the tiny models ({', '.join(TINY)}) are built without weights")
    path = Path(save_to).expanduser()
    fmt = fmt or ("single_file" if path.suffix.lower() in FILE_SUFFIXES else "diffusers")
    if fmt == "single_file":
        out = cli.output_path(path, "--save_to", [], FILE_SUFFIXES)
    else:
        out = cli.output_path(path, "--save_to", [], folder=True)
    fam = family(model, init_seed=init_seed)
    ckpt = Checkpoint(Path(f"<{model} seed {init_seed}>"), "random", model, fam, fam.load())
    write_components(ckpt, out, fmt, cli.dtype(save_precision) or torch.float32)
    log.info("%s (random weights, seed %d) written to %s", model, init_seed, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Write the tiny SD1.5-, SD 2.x-v- or SDXL-shaped test models (random weights) as a checkpoint, to try the tools"
        " offline.",
        "  sdlora-export-model --model tiny --save_to tiny.safetensors\n"
        "  sdlora-export-model --model tiny_sdxl --save_to tiny_sdxl_diffusers --format diffusers\n"
        "  python train.py model=tiny model.pretrained=tiny.safetensors data.train_dir=examples/data ...\n",
    )
    p.add_argument("--model", choices=TINY, default="tiny", help="which tiny model")
    p.add_argument("--save_to", required=True, help="a .safetensors/.ckpt file, or a new folder for diffusers")
    p.add_argument("--format", choices=("single_file", "diffusers"), default=None,
                   help="default: single_file for a file suffix, else diffusers")  # fmt: skip
    p.add_argument("--init_seed", type=int, default=0, help="seed of the random weights (model.init_seed)")
    p.add_argument("--save_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype of the saved tensors (default float)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        export_model(args.model, args.save_to, args.format, args.init_seed, args.save_precision)

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
