"""Resize a LoRA to a lower rank [kohya: networks/resize_lora.py, the GUI's "Resize LoRA"].

Per module: W = up·down (without alpha) is decomposed by SVD (from the factors, :func:`~sdlora.tools.svd.product_svd`),
a new rank r′ is chosen — ``--new_rank`` (``--new_conv_rank`` for k×k convolutions), or with ``--dynamic_method`` the
rank :func:`~sdlora.tools.svd.dynamic_rank` gives, capped at ``--new_rank`` — and ``up = U_r′·diag(S_r′)``,
``down = Vh_r′``. The new alpha keeps the scale: alpha′ = (alpha/r)·r′, so ΔW′ is the best rank-r′ approximation of
ΔW. ``--verbose`` prints, per module, the share of Σs and of the Frobenius norm kept and s₀/s_{r′−1}.
The metadata records the resize in ``ss_training_comment`` and the new ``ss_network_dim``/``ss_network_alpha``.

    sdlora-resize-lora --model big.safetensors --save_to small.safetensors --new_rank 8
    sdlora-resize-lora --model big.safetensors --save_to dyn.safetensors --new_rank 32 \\
        --dynamic_method sv_fro --dynamic_param 0.9 --verbose
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tools import cli

log = logging.getLogger("sdlora")
METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")


@dataclass(frozen=True)
class ResizeResult:
    path: Path
    modules: int
    mean_fro_retained: float


def _check(new_rank: int, new_conv_rank: int, method: str | None, param: float | None) -> None:
    if new_rank < 1 or new_conv_rank < 1:
        raise SdloraError("--new_rank and --new_conv_rank must be ≥ 1")
    if method is None:
        return
    if param is None:
        raise SdloraError(f"--dynamic_method {method} needs --dynamic_param")
    if method == "sv_ratio" and param <= 0:
        raise SdloraError("--dynamic_param for sv_ratio must be > 0 (e.g. 2: keep singular values above s₀/2)")
    if method != "sv_ratio" and not 0 < param <= 1:
        raise SdloraError(f"--dynamic_param for {method} must be in (0, 1] (e.g. 0.9)")


def resize_lora(
    model: str | Path,
    save_to: str | Path,
    new_rank: int = 4,
    new_conv_rank: int | None = None,
    dynamic_method: str | None = None,
    dynamic_param: float | None = None,
    save_precision: str | None = None,
    device: str | None = None,
    verbose: bool = False,
) -> ResizeResult:
    """Write ``model`` resized to ``save_to`` (see the module docstring)."""
    from sdlora.tools.lora_file import LoraModule, read_lora, write_lora
    from sdlora.tools.svd import dynamic_rank, product_svd, retained, truncate

    new_conv_rank = new_conv_rank if new_conv_rank is not None else new_rank
    _check(new_rank, new_conv_rank, dynamic_method, dynamic_param)
    lora = read_lora(model, "--model")
    out = cli.output_path(save_to, "--save_to", [lora.path], cli.LORA_SUFFIXES)
    resized: dict[str, LoraModule] = {}
    fro: list[float] = []
    for name, module in cli.progress(lora.modules.items(), "resizing", len(lora.modules)):
        svd = product_svd(module.up.to(device), module.down.to(device))
        cap = new_conv_rank if module.is_conv else new_rank
        rank = dynamic_rank(svd.s, cap, dynamic_method, dynamic_param)
        up, down = truncate(svd, rank, module.weight_shape)
        rank = down.shape[0]
        resized[name] = LoraModule(down.cpu(), up.cpu(), module.scale * rank)
        kept = retained(svd.s, rank)
        fro.append(kept.fro)
        if verbose:
            log.info(
                "%-75s | sum(S) retained: %.1f%%, fro retained: %.1f%%, max(S) ratio: %.1f, dim: %d, alpha: %g",
                name, 100 * kept.sum, 100 * kept.fro, kept.max_ratio, rank, module.scale * rank,
            )  # fmt: skip
    valid = [f for f in fro if f == f]
    mean = sum(valid) / len(valid) if valid else float("nan")
    if verbose:
        log.info("average Frobenius norm retention: %.2f%%", 100 * mean)
    write_lora(out, resized, _metadata(lora, resized, new_rank, new_conv_rank, dynamic_method, dynamic_param),
               cli.dtype(save_precision or "float"))  # fmt: skip
    log.info("resized %d modules: %s", len(resized), out)
    return ResizeResult(out, len(resized), mean)


def _metadata(lora, resized, new_rank, new_conv_rank, method, param) -> dict[str, str]:
    """The source metadata with kohya's resize comment and the new dims/alphas."""
    from sdlora.tools.lora_file import dim_alpha

    meta = dict(lora.metadata)
    old = max(m.rank for m in lora.modules.values())
    comment = meta.get("ss_training_comment", "")
    comment = "" if comment == "None" else comment
    if method is None:
        conv = "" if new_rank == new_conv_rank else f" (conv: {new_conv_rank})"
        meta["ss_training_comment"] = f"dimension is resized from {old} to {new_rank}{conv}; {comment}"
    else:
        meta["ss_training_comment"] = f"Dynamic resize with {method}: {param} from {old}; {comment}"
    dim, alpha, conv_args = dim_alpha(resized)
    meta["ss_network_dim"], meta["ss_network_alpha"] = dim, alpha
    if conv_args:
        args = json.loads(meta.get("ss_network_args") or "{}") if meta.get("ss_network_args") != "None" else {}
        meta["ss_network_args"] = json.dumps({**args, **conv_args})
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "Resize a LoRA to a lower rank by SVD, keeping its scale (kohya's networks/resize_lora.py).",
        "  sdlora-resize-lora --model big.safetensors --save_to small.safetensors --new_rank 8\n"
        "  sdlora-resize-lora --model big.safetensors --save_to dyn.safetensors --new_rank 32 \\\n"
        "      --dynamic_method sv_fro --dynamic_param 0.9 --verbose\n",
    )
    p.add_argument("--model", required=True, help="LoRA to resize (.safetensors/.ckpt/.pt, kohya format)")
    p.add_argument("--save_to", required=True, help="the resized LoRA (a new file)")
    p.add_argument("--new_rank", type=int, default=4, help="new rank; with --dynamic_method the maximum rank")
    p.add_argument("--new_conv_rank", type=int, default=None, help="new rank of k×k conv modules (default: --new_rank)")
    p.add_argument(
        "--dynamic_method", choices=METHODS, default=None, help="choose each module's rank from its spectrum"
    )
    p.add_argument(
        "--dynamic_param", type=float, default=None,
        help="sv_ratio: keep s > s₀/param; sv_cumulative: share of Σs; sv_fro: share of the Frobenius norm",
    )  # fmt: skip
    p.add_argument("--save_precision", choices=["float", "fp32", "fp16", "bf16"], default=None,
                   help="dtype of the saved tensors (kohya's default: float)")  # fmt: skip
    p.add_argument("--device", default=None, help="device for the SVDs, e.g. cuda")
    p.add_argument("--verbose", action="store_true", help="print the retained norms of every module")
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> None:
        resize_lora(
            args.model, args.save_to, args.new_rank, args.new_conv_rank, args.dynamic_method, args.dynamic_param,
            args.save_precision, args.device, args.verbose,
        )  # fmt: skip

    return cli.run_tool(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
