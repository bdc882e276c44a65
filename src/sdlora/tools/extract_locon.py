"""Extract a LyCORIS LoCon from two checkpoints with lycoris-lora's own extractor [LyCORIS: tools/extract_locon.py,
the kohya_ss GUI's "Extract LyCORIS LoCon"].

``lycoris.utils.extract_diff`` decomposes ΔW = W_db − W_base of every changed Linear, Conv2d and norm layer. The rank
of each module follows ``--mode``: ``fixed`` (``--linear_dim``/``--conv_dim``), ``threshold`` (singular values above
``--linear_threshold``/``--conv_threshold``), ``ratio`` (above ratio·s₀), ``quantile`` (the first singular values
holding that share of Σs); where the rank reaches half the layer's width the full ΔW is stored instead. 3×3 convs get
a CP (Tucker) ``lora_mid`` unless ``--disable_cp``; ``--use_sparse_bias`` keeps the largest residuals (``--sparsity``)
as a sparse bias. lycoris-lora names modules by diffusers paths; sdlora writes kohya's names (SGM names for SDXL's
U-Net, ``text_model_`` in text-encoder names) so the file loads where kohya-trained LyCORIS files load, with kohya's
network metadata (``ss_network_module = lycoris.kohya``).

    sdlora-extract-locon base.safetensors tuned.safetensors locon.safetensors --mode fixed --linear_dim 32 --conv_dim 16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")
MODES = ("fixed", "threshold", "ratio", "quantile")


def _mode_params(mode: str, args: dict) -> tuple[float, float]:
    key = {"fixed": "dim", "threshold": "threshold", "ratio": "ratio", "quantile": "quantile"}[mode]
    linear, conv = args[f"linear_{key}"], args[f"conv_{key}"]
    if mode == "fixed" and (linear < 1 or conv < 1):
        raise SdloraError("--linear_dim and --conv_dim must be ≥ 1")
    if mode in ("ratio", "quantile") and not (0 <= linear <= 1 and 0 <= conv <= 1):
        raise SdloraError(f"--linear_{key} and --conv_{key} must be in [0, 1]")
    if mode == "threshold" and (linear < 0 or conv < 0):
        raise SdloraError("--linear_threshold and --conv_threshold must be ≥ 0")
    return linear, conv


def _kohya_names(ckpt) -> dict[str, str]:
    """lycoris-lora's extraction name (prefix + diffusers path) → kohya name, for every module of ``ckpt``."""
    from sdlora.tools.names import all_module_names

    prefixes = {"unet": "lora_unet"}
    tes = ckpt.components.text_encoders
    for i, component in enumerate(c for c in ckpt.roots() if c != "unet"):
        prefixes[component] = "lora_te" if len(tes) == 1 else f"lora_te{i + 1}"
    return {
        f"{prefixes[m.component]}.{m.path}".replace(".", "_"): name
        for name, m in all_module_names(ckpt.family, ckpt.roots()).items()
    }


def extract_locon(
    base_model: str | Path, db_model: str | Path, output_name: str | Path, mode: str = "fixed",
    device: str = "cpu", use_sparse_bias: bool = False, sparsity: float = 0.98, disable_cp: bool = False,
    model: str | None = None, save_precision: str | None = None, **params: float,
) -> Path:  # fmt: skip
    """Write the LoCon of ``db_model`` − ``base_model``; ``params``: linear_/conv_ dim, threshold, ratio, quantile."""
    from lycoris.utils import extract_diff

    from sdlora.network.io import save_lora
    from sdlora.tools.checkpoint import open_checkpoint
    from sdlora.tools.extract import _same_family
    from sdlora.tools.lora_file import family_metadata

    defaults = {"linear_dim": 1, "conv_dim": 1, "linear_threshold": 0.0, "conv_threshold": 0.0, "linear_ratio": 0.0,
                "conv_ratio": 0.0, "linear_quantile": 1.0, "conv_quantile": 1.0}  # fmt: skip
    linear, conv = _mode_params(mode, defaults | params)
    out = cli.output_path(output_name, "output_name", [base_model, db_model], cli.LORA_SUFFIXES)
    base = open_checkpoint(base_model, "base_model", model)
    tuned = open_checkpoint(db_model, "db_model", model or base.model)
    _same_family(base, tuned, base.targets(), tuned.targets())
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a module count; we log our own
        state = extract_diff(
            base.components.text_encoders, tuned.components.text_encoders, base.components.unet,
            tuned.components.unet, mode, linear, conv, device, use_sparse_bias, sparsity, not disable_cp,
        )  # fmt: skip
    names = _kohya_names(base)
    tensors = {}
    for key, value in state.items():
        name, rest = key.split(".", 1)
        tensors[f"{names.get(name, name)}.{rest}"] = value.to(cli.dtype(save_precision) or value.dtype).contiguous()
    if not tensors:
        raise SdloraError(f"{db_model} does not differ from {base_model}: there is nothing to extract")
    modules = len({k.split(".", 1)[0] for k in tensors})
    dim = str(linear if mode == "fixed" else "Dynamic")
    args = {"algo": "locon", "mode": mode, "conv_dim": str(conv if mode == "fixed" else "Dynamic")}
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": dim, "ss_network_alpha": dim,
            "ss_network_args": json.dumps(args), **family_metadata(base.model, out.stem)}  # fmt: skip
    save_lora(out, tensors, meta if out.suffix == ".safetensors" else None)
    log.info("extracted %d LoCon modules (mode %s): %s", modules, mode, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Extract a LyCORIS LoCon (LoRA on Linear, conv and norm layers) from two checkpoints with lycoris-lora's "
        "extractor (LyCORIS's tools/extract_locon.py; positional arguments as there).",
        "  sdlora-extract-locon base.safetensors tuned.safetensors locon.safetensors --linear_dim 32 --conv_dim 16\n"
        "  sdlora-extract-locon /models/sdxl /models/sdxl-tuned out.safetensors --mode ratio \\\n"
        "      --linear_ratio 0.25 --conv_ratio 0.25 --device cuda\n",
    )
    p.add_argument("base_model", help="the original model (single file or diffusers folder)")
    p.add_argument("db_model", help="the fine-tuned model")
    p.add_argument("output_name", help="the LoCon file to write")
    p.add_argument("--mode", choices=MODES, default="fixed", help="how each module's rank is chosen")
    p.add_argument("--linear_dim", type=int, default=1, help="fixed: rank of Linear / 1×1 layers")
    p.add_argument("--conv_dim", type=int, default=1, help="fixed: rank of k×k convs")
    p.add_argument("--linear_threshold", type=float, default=0.0, help="threshold: keep singular values above this")
    p.add_argument("--conv_threshold", type=float, default=0.0, help="threshold: the same for convs")
    p.add_argument("--linear_ratio", type=float, default=0.0, help="ratio: keep singular values above ratio·s₀")
    p.add_argument("--conv_ratio", type=float, default=0.0, help="ratio: the same for convs")
    p.add_argument("--linear_quantile", type=float, default=1.0, help="quantile: keep this share of Σs")
    p.add_argument("--conv_quantile", type=float, default=1.0, help="quantile: the same for convs")
    p.add_argument("--use_sparse_bias", action="store_true", help="store the largest residuals as a sparse bias")
    p.add_argument("--sparsity", type=float, default=0.98, help="share of residuals left out of the sparse bias")
    p.add_argument("--disable_cp", action="store_true", help="no CP (Tucker) decomposition of 3×3 convs")
    p.add_argument("--device", default="cpu", help="device for the SVDs, e.g. cuda")
    p.add_argument("--save_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype of the saved tensors (default: lycoris-lora's fp16)")  # fmt: skip
    p.add_argument("--model", choices=cli.PRESETS, default=None, help="preset of both models (default: detected)")
    p.add_argument(
        "--is_v2",
        "--is_sdxl",
        "--safetensors",
        dest="ignored",
        action="store_true",
        help="accepted for LyCORIS's script; sdlora detects the family and writes the output's suffix",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        params = {
            k: getattr(args, k)
            for k in (
                "linear_dim",
                "conv_dim",
                "linear_threshold",
                "conv_threshold",
                "linear_ratio",
                "conv_ratio",
                "linear_quantile",
                "conv_quantile",
            )
        }
        extract_locon(args.base_model, args.db_model, args.output_name, args.mode, args.device, args.use_sparse_bias,
                      args.sparsity, args.disable_cp, args.model, args.save_precision, **params)  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
