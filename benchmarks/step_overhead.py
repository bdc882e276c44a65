"""Per-step overhead of sdlora's Lightning training step against a plain PyTorch loop, and precision costs on this CPU.

Both sides are :mod:`benchmarks.gpu_throughput`'s, run on the CPU with a mid-size SD1.5-shaped model with random
weights — SD1.5's layout at half its channel widths (about a quarter of its parameters), a small VAE and text
encoder: sdlora's real path (``sdlora.run.train``: data plan, caches, DataLoader, LightningModule, callbacks, logging
every 10 steps) against the textbook loop of diffusers' LoRA example (noise, U-Net, MSE, backward, clip, AdamW,
zero_grad) on the same components and LoRA (sdlora's injection, rank 16), 256 px, batch 1, latents and text-encoder
outputs cached.

Each measurement runs in its own process (peak RSS is per process); the measurements are interleaved for ``--rounds``
rounds (so that a change of load on a shared machine hits all of them alike) and the medians are compared. Printed:
median step time and peak RSS of each, and the ratios (targets: step ≤ 1.05, RSS ≤ 1.10); then sdlora's step with
precision fp32, bf16_mixed and full_bf16.

    python benchmarks/step_overhead.py                 # about 5 minutes on 2 idle CPU cores
    python benchmarks/step_overhead.py --steps 20 --rounds 3 --resolution 256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def mid_size_config(folder: Path) -> Path:
    """The shipped SD1.5 config folder with a half-width U-Net, a small VAE and a 4-layer text encoder."""
    from sdlora.models.configs import config_dir

    target = folder / "sd15_mid"
    shutil.copytree(config_dir("sd15"), target)
    edits = {
        "unet": {"block_out_channels": [160, 320, 640, 640]},
        "vae": {"block_out_channels": [32, 64, 128, 128]},
        "text_encoder": {"num_hidden_layers": 4},
    }
    for sub, changes in edits.items():
        path = target / sub / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))
    return target


def main() -> None:
    import tempfile

    from gpu_throughput import Case, measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all the measurements")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    run = SimpleNamespace(device="cpu", tiny=False, steps=args.steps, warmup=args.warmup)
    with tempfile.TemporaryDirectory() as folder:
        config = str(mid_size_config(Path(folder)))
        base = Case("mid", "sd15", args.resolution, precision="fp32", rank=16, config=config)
        variants = [("plain", "fp32"), ("sdlora", "fp32"), ("sdlora", "bf16_mixed"), ("sdlora", "full_bf16")]
        results: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
        for _ in range(args.rounds):  # interleaved, so that a change of load on the machine hits every variant alike
            for side, precision in variants:
                result = measure(dataclasses.replace(base, precision=precision), side, run)
                if "error" in result:
                    raise SystemExit(f"{side} {precision} failed: {' '.join(result['error'])}")
                results[(side, precision)].append(result)
    step = {v: statistics.median(r["s_per_it"] for r in rs) for v, rs in results.items()}
    rss = {v: statistics.median(r["peak_rss_mib"] for r in rs) for v, rs in results.items()}
    plain, ours = ("plain", "fp32"), ("sdlora", "fp32")
    print(f"model: SD1.5-shaped, half-width U-Net, {args.resolution}px, batch 1, LoRA rank 16 on the U-Net, cached "
          f"latents and text-encoder outputs; {args.steps} steps after {args.warmup} warm-up; median of "
          f"{args.rounds} interleaved rounds")  # fmt: skip
    print(f"{'':24}{'step (s)':>10}{'peak RSS (MiB)':>16}")
    for variant, label in ((plain, "plain PyTorch loop"), (ours, "sdlora (Lightning)")):
        print(f"{label:24}{step[variant]:>10.3f}{rss[variant]:>16.0f}")
    ratios = step[ours] / step[plain], rss[ours] / rss[plain]
    print(f"{'ratio sdlora / plain':24}{ratios[0]:>10.3f}{ratios[1]:>16.3f}   (targets ≤ 1.05, ≤ 1.10)")
    print("\nsdlora step by precision (this CPU):")
    for precision in ("fp32", "bf16_mixed", "full_bf16"):
        v = ("sdlora", precision)
        print(f"  {precision:12}{step[v]:>8.3f} s ({step[v] / step[ours]:.2f}x)"
              f"{rss[v]:>9.0f} MiB ({rss[v] / rss[ours]:.2f}x)")  # fmt: skip
    print("per round (step s):", {f"{k}/{p}": [round(r["s_per_it"], 3) for r in rs] for (k, p), rs in results.items()})


if __name__ == "__main__":
    main()
