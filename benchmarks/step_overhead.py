"""Per-step overhead of sdlora's Lightning training step against a plain PyTorch loop, and precision costs on this CPU.

Both loops train the same LoRA (sdlora's injection, AdamW, gradient clipping 1.0, constant schedule) on the same
SD1.5-shaped model with random weights — a mid-size U-Net (SD1.5's layout at half its channel widths, about a quarter
of its parameters), a small VAE and text encoder — and the same batch, fed again at every step. The plain loop is the
textbook one: VAE encode, text encode, noise, U-Net, MSE, backward, clip, step, zero_grad. sdlora's is
``LoRATrainingModule`` under ``lightning.Trainer`` with a TensorBoard logger, as ``train.py`` runs it.

Each measurement runs in its own process (peak RSS is per process); the measurements are interleaved for ``--rounds``
rounds (so that a change of load on a shared machine hits all of them alike) and the medians are compared. Printed:
median step time and peak RSS of each, and the ratios (targets: step ≤ 1.05, RSS ≤ 1.10); then sdlora's step with
precision fp32, bf16_mixed and full_bf16.

    python benchmarks/step_overhead.py                 # about 10 minutes on 2 idle CPU cores
    python benchmarks/step_overhead.py --steps 20 --rounds 3 --resolution 256
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "a photo of sks dog, sitting on a red sofa, high quality"


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


def build(config: Path, precision: str):
    """Family, components and LoRA network, as ``sdlora.run`` builds them."""
    import torch
    from omegaconf import OmegaConf

    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network
    from sdlora.precision.policy import resolve_precision

    node = OmegaConf.load(ROOT / "conf" / "precision" / f"{precision}.yaml")
    plan = resolve_precision(node, "cpu")
    family = TinySD15Family(config=str(config), init_seed=0)
    components = family.load(getattr(torch, plan.weight_dtype))
    network_cfg = OmegaConf.create({"rank": 16, "alpha": 8.0, "train_unet": True, "train_text_encoder": False})
    network_cfg = OmegaConf.merge(network_cfg, {"unet_lr": None, "text_encoder_lr": None})
    network = build_network(family, components, network_cfg)
    network.to(getattr(torch, plan.lora_dtype))
    return family, components, network, plan


def batch(resolution: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {
        "pixels": torch.rand(1, 3, resolution, resolution, generator=generator) * 2 - 1,
        "captions": [CAPTION],
        "size_cond": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32),
        "loss_weight": torch.ones(1),
        "paths": ["cached"],
    }


def plain_loop(config: Path, args) -> list[float]:
    """Diffusers U-Net + LoRA + AdamW, no Lightning."""
    import torch

    from sdlora.diffusion.objective import DiffusionObjective

    torch.manual_seed(0)
    family, components, network, _ = build(config, "fp32")
    objective = DiffusionObjective(components.prediction_type)
    params = list(network.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    data = batch(args.resolution)
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        with torch.no_grad():
            latents = components.vae.encode(data["pixels"]).latent_dist.sample(generator=generator)
            latents = latents * family.latent_scale
            text = family.encode_text(components, data["captions"])
        noised = objective.noise(latents, generator=generator)
        inputs = family.unet_inputs(text, data["size_cond"])
        prediction = components.unet(noised.noisy, noised.timesteps, **inputs).sample
        loss = objective.loss(prediction, noised, data).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    return times[args.warmup :]


def lightning_loop(config: Path, args, precision: str) -> list[float]:
    """sdlora's LoRATrainingModule under lightning.Trainer, as train.py runs it."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger

    from sdlora.diffusion.objective import DiffusionObjective
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.optim import schedulers

    class Clock(Callback):
        def __init__(self):
            self.marks = []

        def on_train_batch_start(self, *_):
            self.marks.append(time.perf_counter())

        def on_train_batch_end(self, *_):
            self.marks[-1] = time.perf_counter() - self.marks[-1]

    class Repeat(torch.utils.data.Dataset):
        def __init__(self, item, n):
            self.item, self.n = item, n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.item

    torch.manual_seed(0)
    family, components, network, plan = build(config, precision)
    total = args.warmup + args.steps
    module = LoRATrainingModule(
        family, components, network,
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.01),
        scheduler=schedulers.constant,
        learning_rates={"default": 1e-4, "unet": None, "text_encoder": None},
        total_steps=total, batches_per_epoch=total,
        objective=DiffusionObjective(components.prediction_type), seed=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(Repeat(batch(args.resolution), total), batch_size=None)
    clock = Clock()
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            accelerator="cpu", precision=plan.trainer_precision, max_steps=total, gradient_clip_val=1.0,
            logger=TensorBoardLogger(logs), log_every_n_steps=10, callbacks=[clock], enable_progress_bar=False,
            enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(module, loader)
    return clock.marks[args.warmup :]


def worker(args) -> None:
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    with tempfile.TemporaryDirectory() as folder:
        config = mid_size_config(Path(folder))
        times = plain_loop(config, args) if args.worker == "plain" else lightning_loop(config, args, args.precision)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"step_s": statistics.median(times), "peak_rss_mib": peak_kib / 1024}))


def measure(kind: str, precision: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--precision", precision, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--resolution", str(args.resolution)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all the measurements")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--worker", choices=["plain", "lightning"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    variants = [("plain", "fp32"), ("lightning", "fp32"), ("lightning", "bf16_mixed"), ("lightning", "full_bf16")]
    results: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for _ in range(args.rounds):  # interleaved, so that a change of load on the machine hits every variant alike
        for kind, precision in variants:
            results[(kind, precision)].append(measure(kind, precision, args))
    step = {v: statistics.median(r["step_s"] for r in rs) for v, rs in results.items()}
    rss = {v: statistics.median(r["peak_rss_mib"] for r in rs) for v, rs in results.items()}
    plain, ours = ("plain", "fp32"), ("lightning", "fp32")
    print(f"model: SD1.5-shaped, half-width U-Net, {args.resolution}px, batch 1, LoRA rank 16 on the U-Net; "
          f"{args.steps} steps after {args.warmup} warm-up; median of {args.rounds} interleaved rounds")  # fmt: skip
    print(f"{'':24}{'step (s)':>10}{'peak RSS (MiB)':>16}")
    for variant, label in ((plain, "plain PyTorch loop"), (ours, "sdlora (Lightning)")):
        print(f"{label:24}{step[variant]:>10.3f}{rss[variant]:>16.0f}")
    ratios = step[ours] / step[plain], rss[ours] / rss[plain]
    print(f"{'ratio sdlora / plain':24}{ratios[0]:>10.3f}{ratios[1]:>16.3f}   (targets ≤ 1.05, ≤ 1.10)")
    print("\nsdlora step by precision (this CPU):")
    for precision in ("fp32", "bf16_mixed", "full_bf16"):
        v = ("lightning", precision)
        print(f"  {precision:12}{step[v]:>8.3f} s ({step[v] / step[ours]:.2f}x)"
              f"{rss[v]:>9.0f} MiB ({rss[v] / rss[ours]:.2f}x)")  # fmt: skip
    print("per round (step s):", {f"{k}/{p}": [round(r["step_s"], 3) for r in rs] for (k, p), rs in results.items()})


if __name__ == "__main__":
    main()
