"""Fit the memory estimate's activation coefficients (:data:`sdlora.memory.COEFFICIENTS_BY_KIND`) to the bytes
autograd saves for backward in one U-Net forward pass with a LoRA (``saved_tensors_hooks``), on SD1.5- and SDXL-shaped
U-Nets of several widths at several latent sizes.

The estimate models the saved elements per image as ``a_r·R + a_b·B + a_t·T + a_x·X`` over the U-Net's resnets (R),
transformer blocks (B), transformers (T) and cross-attention keys/values (X) (:func:`sdlora.memory.
unet_activation_features`), in units of the activation bytes (4 for fp32, 2 under autocast); LoCon (modules on the
resnet convs) adds ``a_locon·R``. The four coefficients are a least-squares fit to the LoRA runs, ``a_locon`` to the
LoCon runs' excess over them; both minimise relative errors (every run weighs the same).

    python benchmarks/fit_activations.py [--kind mixed|fp32|both]

prints the fitted coefficients, each run's measured and estimated bytes with the fitted and the shipped coefficients,
and their ratio. CPU only; a few minutes a kind. Under ``mixed`` the frozen U-Net is bfloat16 and the LoRA float32
(``precision=bf16_mixed``); ``full16`` runs with a bfloat16 LoRA are reported beside them (``precision=full_bf16``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (name, shipped config, U-Net edits): SD1.5 and SDXL layouts at several widths (the text encoders cut to one layer).
SHAPES = [
    ("sd15-w32", "sd15", {"block_out_channels": [32, 64, 128, 128], "attention_head_dim": 4}),
    ("sd15-w64", "sd15", {"block_out_channels": [64, 128, 256, 256], "attention_head_dim": 8}),
    ("sd15-w160", "sd15", {"block_out_channels": [160, 320, 640, 640]}),
    ("sdxl-w64", "sdxl", {"block_out_channels": [64, 128, 256], "transformer_layers_per_block": [1, 1, 2]}),
    ("sdxl-w160", "sdxl", {"block_out_channels": [160, 320, 640], "transformer_layers_per_block": [1, 2, 3]}),
]
SIDES = (16, 32, 64)  # latent sides (128, 256 and 512 px)
BATCH = 2


def shape_folder(folder: Path, base: str, unet_edits: dict) -> Path:
    from sdlora.models.configs import config_dir

    shutil.copytree(config_dir(base), folder)
    edits = {"unet": unet_edits, "text_encoder": {"num_hidden_layers": 1}, "text_encoder_2": {"num_hidden_layers": 1}}
    for sub, changes in edits.items():
        path = folder / sub / "config.json"
        if path.is_file():
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))
    return folder


def measure(folder: Path, base: str, side: int, kind: str, conv: bool) -> float:
    """Bytes saved for backward in one forward pass of ``BATCH`` latents of ``side``² (one LoRA, rank 4)."""
    import torch

    from sdlora.config.schema import NetworkConfig, NetworkType
    from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
    from sdlora.network.build import build_network
    from sdlora.utils.saved_bytes import saved_bytes

    torch.manual_seed(0)
    family = (TinySDXLFamily if base == "sdxl" else TinySD15Family)(config=str(folder))
    dtype = torch.float32 if kind == "fp32" else torch.bfloat16
    components = family.load(dtype)
    options = {"name": NetworkType.locon, "conv_rank": 4} if conv else {}  # kohya's LoCon: the resnet convs too
    network = build_network(family, components, NetworkConfig(rank=4, train_text_encoder=False, **options))
    if kind == "full16":
        network.cast_(torch.bfloat16)
    unet = components.unet
    kwargs = {"encoder_hidden_states": torch.randn(BATCH, 77, unet.config.cross_attention_dim, dtype=dtype)}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(BATCH, pooled, dtype=dtype),
                                       "time_ids": torch.zeros(BATCH, 6, dtype=dtype)}  # fmt: skip
    with saved_bytes(unet) as saved, torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind != "fp32"):
        unet(torch.randn(BATCH, 4, side, side, dtype=dtype), torch.tensor([500] * BATCH), **kwargs)
    return float(saved[0])


def runs(kind: str) -> list[dict]:
    from sdlora.memory import unet_activation_features
    from sdlora.models.sizes import model_size

    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, base, edits in SHAPES:
            folder = shape_folder(Path(tmp) / name, base, edits)
            unet = model_size(folder).unet
            for side in SIDES:
                features = unet_activation_features(unet, (side, side))
                row = {"shape": name, "side": side, "features": features, "unet": unet}
                for conv in (False, True):
                    row["locon" if conv else "lora"] = measure(folder, base, side, kind, conv)
                if kind == "mixed":
                    row["full16"] = measure(folder, base, side, "full16", False)
                found.append(row)
                print(f"  {name} {side * 8} px: LoRA {row['lora'] / 1e6:.2f} MB, LoCon {row['locon'] / 1e6:.2f} MB",
                      flush=True)  # fmt: skip
    return found


def fit(rows: list[dict], kind: str) -> dict[str, float]:
    import numpy as np

    width = 4 if kind == "fp32" else 2
    keys = ("resnet", "block", "transformer", "text")
    matrix = np.array([[row["features"][k] for k in keys] for row in rows])
    target = np.array([row["lora"] / (width * BATCH) for row in rows])
    # relative errors: each run weighs the same, whatever its size
    solution, *_ = np.linalg.lstsq(matrix / target[:, None], np.ones_like(target), rcond=None)
    coefficients = dict(zip(keys, (round(float(v), 2) for v in solution), strict=True))
    excess = np.array([(row["locon"] - row["lora"]) / (width * BATCH) for row in rows])
    resnet = np.array([row["features"]["resnet"] for row in rows])
    coefficients["locon"] = round(float(excess @ resnet / (resnet @ resnet)), 2)
    return coefficients


def report(rows: list[dict], kind: str, coefficients: dict[str, float]) -> None:
    from sdlora.memory import COEFFICIENTS_BY_KIND, unet_activations

    width = 4 if kind == "fp32" else 2
    shipped = COEFFICIENTS_BY_KIND["fp32" if kind == "fp32" else "mixed"]
    print(f"{kind}: fitted {coefficients}\n       shipped {shipped}")
    for row in rows:
        for network, conv in (("lora", False), ("locon", True)):
            cells = []
            for label, c in (("fitted", coefficients), ("shipped", shipped)):
                estimate = BATCH * width * unet_activations(row["unet"], (row["side"],) * 2, coefficients=c,
                                                            locon=conv).full  # fmt: skip
                cells.append(f"{label} {estimate / row[network]:.3f}×")
            extra = f", full16 / mixed {row['full16'] / row['lora']:.3f}" if "full16" in row and not conv else ""
            print(f"  {row['shape']:>9} {row['side'] * 8:>3} px {network:>5}: measured {row[network] / 1e6:7.2f} MB, "
                  f"estimate / measured: {', '.join(cells)}{extra}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("mixed", "fp32", "both"), default="both")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    for kind in ("fp32", "mixed") if args.kind == "both" else (args.kind,):
        print(f"measuring {kind}")
        rows = runs(kind)
        report(rows, kind, fit(rows, kind))


if __name__ == "__main__":
    main()
