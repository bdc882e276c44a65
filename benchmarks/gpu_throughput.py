"""GPU throughput and MFU: sdlora's training step under ``lightning.Trainer`` against the textbook diffusers loop on
the same model, LoRA and batch, side by side in one run (docs/performance.md "GPU throughput").

Models are the full-size SD1.5 and SDXL architectures from the shipped configs with random weights (no download):
``model=tiny model.config=<config>`` builds them as the tiny families build theirs. Every case varies one option of a
base case (bf16_mixed, batch 1, LoRA rank 32 on the U-Net, sdpa, cached latents and text-encoder outputs, eager, no
gradient checkpointing) — batch 4, full_bf16, gradient checkpointing, encoding every step, text encoders trained,
``model.compile=true``, ``model.channels_last`` — plus the issue's target cases (SDXL batch 4 compiled, SDXL batch 1
checkpointed). Each side of each case runs in its own process (its own peak memory and compile caches):

- **sdlora**: ``sdlora.run.train`` on a synthetic dataset of images of the case's resolution — the real path: data
  plan, caches, DataLoader, LightningModule, callbacks, logging every 10 steps, the final LoRA file;
- **plain**: the loop of diffusers' ``train_text_to_image_lora_sdxl.py`` on the same components and LoRA (sdlora's
  injection): latents (cached posterior sampled, or VAE-encoded), text embeddings (cached, or encoded), noise,
  uniform timesteps, ``DDPMScheduler.add_noise``, the U-Net under bf16 autocast, MSE in float32, backward, gradient
  clipping to 1.0, ``torch.optim.AdamW`` step, ``zero_grad``, and the loss's ``.item()`` for the progress bar.

Per case: s/it (``--steps`` optimizer steps after ``--warmup``, timed as one span with a device sync at both ends, so
that the measurement adds no sync per step), samples/s, peak memory (``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over the timed steps), the memory estimate printed before launch (:mod:`sdlora.memory`) against
the measured peak, model FLOPs of one step (forward + backward, counted with
``torch.utils.flop_counter.FlopCounterMode`` on the eager model), MFU = FLOPs / (s/it × the GPU's dense bf16 peak,
:data:`PEAK_BF16_TFLOPS`; an unknown GPU gets no MFU), the ratio sdlora / plain, and the time of the first step
(for compiled cases: compilation).

Without a CUDA GPU it says so and exits 0. ``--device cpu --tiny`` runs the same code on the tiny models on a CPU (the
unit test does, so that the script cannot rot; times there mean nothing).

    python benchmarks/gpu_throughput.py                          # every case, SD1.5 and SDXL (about 30-40 min on H100)
    python benchmarks/gpu_throughput.py --cases sdxl-base sdxl-b4-compile --steps 20 --markdown results.md
    python benchmarks/gpu_throughput.py --list
    python benchmarks/gpu_throughput.py --device cpu --tiny --cases sd15-base --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "a photo of sks dog, sitting on a red sofa, high quality"

#: dense (not sparse) bf16 tensor peak, TFLOPS, by a substring of torch.cuda.get_device_name(); the first match wins
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM5 / HBM3
    ("A100", 312.0),
    ("L40S", 362.1),
    ("RTX 4090", 165.2),  # FP32 accumulate
    ("L4", 121.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``device_name`` (None when it is not in :data:`PEAK_BF16_TFLOPS`)."""
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


@dataclass(frozen=True)
class Case:
    """One configuration, measured on both sides."""

    name: str
    model: str  # "sd15" | "sdxl"
    resolution: int
    batch: int = 1
    precision: str = "bf16_mixed"
    checkpointing: bool = False
    cached: bool = True  # latents and text-encoder outputs cached
    compile: bool = False
    channels_last: bool = False
    train_text_encoder: bool = False
    rank: int = 32
    network: str = "lora"  # network=<name>; LyCORIS types with their default preset (full)
    config: str | None = None  # another diffusers config folder of the model's layout (benchmarks/step_overhead.py)


def cases(tiny: bool = False) -> list[Case]:
    """Per model: the base case and one-option variants; then the issue's target cases."""
    out = []
    for model, resolution in (("sd15", 512), ("sdxl", 1024)):
        base = Case(f"{model}-base", model, 64 if tiny else resolution)
        out += [
            base,
            dataclasses.replace(base, name=f"{model}-b4", batch=4),
            dataclasses.replace(base, name=f"{model}-full_bf16", precision="full_bf16"),
            dataclasses.replace(base, name=f"{model}-ckpt", checkpointing=True),
            dataclasses.replace(base, name=f"{model}-encode", cached=False),
            dataclasses.replace(base, name=f"{model}-te", cached=False, train_text_encoder=True),
            dataclasses.replace(base, name=f"{model}-compile", compile=True),
            dataclasses.replace(base, name=f"{model}-channels_last", channels_last=True),
        ]
    sdxl = next(c for c in out if c.name == "sdxl-base")
    out += [
        dataclasses.replace(sdxl, name="sdxl-b4-compile", batch=4, compile=True),
        dataclasses.replace(sdxl, name="sdxl-b1-ckpt-target", checkpointing=True),
        # LyCORIS keeps each rebuilt weight for backward: the memory estimate's term for it, checked on a GPU
        dataclasses.replace(sdxl, name="sdxl-lycoris", network="lycoris_locon", rank=16),
        dataclasses.replace(sdxl, name="sdxl-lycoris-ckpt", network="lycoris_locon", rank=16, checkpointing=True),
    ]
    return out


# --- shared by both sides --------------------------------------------------------------------------------------------


def family_options(case: Case, tiny: bool) -> tuple[str, str | None]:
    """(model preset, model.config) building the case's architecture with random weights."""
    from sdlora.models.configs import config_dir

    preset = "tiny_sdxl" if case.model == "sdxl" else "tiny"
    return preset, None if tiny else case.config or str(config_dir(case.model))


def make_dataset(folder: Path, case: Case, images: int = 8) -> Path:
    """``images`` smooth images of the case's resolution with captions, in one ``1_bench`` folder."""
    import numpy as np
    from PIL import Image

    target = folder / "1_bench"
    target.mkdir(parents=True, exist_ok=True)
    side = case.resolution
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(images):
        pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.full((side, side), 40.0 * i)], -1)
        Image.fromarray((pixels % 256).astype(np.uint8)).save(target / f"{i:03d}.png")
        (target / f"{i:03d}.txt").write_text(f"{CAPTION}, {i}")
    return folder


def device_sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def memory_peaks(device: str) -> dict[str, float | None]:
    import torch

    if device != "cuda":  # the process's peak RSS instead (benchmarks/step_overhead.py)
        import resource

        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"peak_allocated_gb": None, "peak_reserved_gb": None, "peak_rss_mib": rss_mib}
    return {"peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
            "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9}  # fmt: skip


def reset_peaks(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


# --- sdlora: the real path -------------------------------------------------------------------------------------------


def sdlora_overrides(case: Case, args, dataset: Path) -> list[str]:
    preset, config = family_options(case, args.tiny)
    overrides = [
        f"model={preset}", f"data.train_dir={dataset}", "data.caption_extension=.txt",
        f"data.resolution={case.resolution}", f"data.min_bucket_reso={min(case.resolution, 64 if args.tiny else 256)}",
        f"data.batch_size={case.batch}", f"precision={case.precision}", f"network={case.network}",
        f"network.rank={case.rank}",
        f"network.alpha={case.rank // 2}", f"network.train_text_encoder={str(case.train_text_encoder).lower()}",
        f"model.gradient_checkpointing={str(case.checkpointing).lower()}", f"model.compile={str(case.compile).lower()}",
        f"model.channels_last={str(case.channels_last).lower()}", "model.attention=sdpa",
        f"trainer.max_steps={args.warmup + args.steps}", "trainer.enable_progress_bar=false",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
    ]  # fmt: skip
    if config:
        overrides.append(f"model.config={config}")
    if case.cached:
        overrides += ["data.cache_latents=memory", "data.cache_text_encoder_outputs=true"]
    return overrides


def run_sdlora(case: Case, args) -> dict:
    import lightning as L

    from sdlora.run import train
    from tests.helpers.config import compose_config

    class Meter(L.Callback):
        """Times the steps after the warm-up as one span (a sync at both ends only) and the first step. The span ends
        with the last optimizer step, before the end of training writes the final LoRA file (which the plain loop
        does not do)."""

        def __init__(self) -> None:
            self.first = self.start = self.end = self.started_at = None

        def on_train_start(self, trainer, pl_module) -> None:
            device_sync(args.device)
            self.started_at = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == args.warmup and self.start is None:
                device_sync(args.device)
                reset_peaks(args.device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.first is None:
                device_sync(args.device)
                self.first = time.perf_counter() - self.started_at
            if trainer.global_step == args.warmup + args.steps and self.end is None:
                device_sync(args.device)
                self.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "data", case)
        meter = Meter()
        train(compose_config(*sdlora_overrides(case, args, dataset)), Path(tmp) / "run", callbacks=[meter])
        plan = json.loads((Path(tmp) / "run" / "data_plan.json").read_text())
    seconds = (meter.end - meter.start) / args.steps
    return {"s_per_it": seconds, "first_step_s": meter.first, "estimate_gb": plan.get("memory", {}).get("peak_gb"),
            **memory_peaks(args.device)}  # fmt: skip


# --- plain: the textbook diffusers loop ------------------------------------------------------------------------------


def build_components(case: Case, args):
    """The case's model (random weights, as sdlora builds it) with sdlora's LoRA on it, on the device."""
    import torch

    from sdlora.config.schema import LycorisPreset, NetworkConfig, NetworkType
    from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
    from sdlora.network.build import build_network
    from sdlora.network.types import type_info

    preset, config = family_options(case, args.tiny)
    family = (TinySDXLFamily if preset == "tiny_sdxl" else TinySD15Family)(config=config, init_seed=0)
    weights = torch.bfloat16 if case.precision in ("bf16_mixed", "full_bf16") else torch.float32
    components = family.load(weights, torch.float32 if case.model == "sdxl" else weights)  # as precision= loads them
    lycoris = LycorisPreset.full if type_info(case.network).lycoris else None
    options = NetworkConfig(name=NetworkType(case.network), rank=case.rank, alpha=case.rank // 2,
                            train_text_encoder=case.train_text_encoder, preset=lycoris)  # fmt: skip
    network = build_network(family, components, options)
    network.cast_(torch.bfloat16 if case.precision == "full_bf16" else torch.float32)
    for module in (components.unet, components.vae, *components.text_encoders):
        module.to(args.device)
    if case.checkpointing:
        components.unet.enable_gradient_checkpointing()
    if case.channels_last:
        components.unet.to(memory_format=torch.channels_last)
    return family, components, network


def plain_step_fn(case: Case, args, family, components, network):
    """One optimizer step of the diffusers LoRA example's loop, as a closure; returns (step, params)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    device, batch, side = args.device, case.batch, case.resolution
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)  # fmt: skip
    params = list(network.trainable_parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    generator = torch.Generator(device="cpu").manual_seed(0)
    pixels = (torch.rand(batch, 3, side, side, generator=generator) * 2 - 1).to(device)
    captions = [CAPTION] * batch
    vae = components.vae
    size_cond = torch.tensor([[side, side, 0, 0, side, side]] * batch, dtype=torch.float32, device=device)
    cached = {}
    if case.cached:
        with torch.no_grad():
            posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
            cached["mean"], cached["std"] = posterior.mean, posterior.std
            cached["text"] = family.encode_text(components, captions)
    components.unet.train()
    state = {"loss": 0.0}

    def step() -> None:
        with torch.no_grad():
            if case.cached:
                latents = cached["mean"] + cached["std"] * torch.randn_like(cached["std"])
            else:
                latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample()
            latents = latents.float() * family.latent_scale
        if case.cached:
            text = cached["text"]
        elif case.train_text_encoder:
            text = family.encode_text(components, captions)
        else:
            with torch.no_grad():
                text = family.encode_text(components, captions)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=case.precision != "fp32"):
            inputs = family.unet_inputs(text, size_cond)
            prediction = components.unet(noisy.to(components.unet.dtype), timesteps, **inputs).sample
        loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["loss"] += loss.detach().item()  # the example script's train_loss / progress bar

    return step


def count_flops(step) -> int:
    """Model FLOPs of one step (forward + backward) as ``FlopCounterMode`` counts them (matmuls, convolutions,
    attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def run_plain(case: Case, args) -> dict:
    import torch

    family, components, network = build_components(case, args)
    step = plain_step_fn(case, args, family, components, network)
    step()  # the first step allocates the optimizer state; FLOPs are counted on a settled eager step
    flops = count_flops(step)
    if case.compile:
        components.unet.compile()
    device_sync(args.device)
    started = time.perf_counter()
    step()
    device_sync(args.device)
    first = time.perf_counter() - started
    for _ in range(max(0, args.warmup - 1)):
        step()
    device_sync(args.device)
    reset_peaks(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    device_sync(args.device)
    seconds = (time.perf_counter() - start) / args.steps
    del torch
    return {"s_per_it": seconds, "first_step_s": first, "flops": flops, **memory_peaks(args.device)}


# --- orchestration ---------------------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)  # fmt: skip
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=20).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    # a copy of the working tree without its .git (a lent GPU machine): the commit is passed in
    info["commit"] = info["commit"] or os.environ.get("SDLORA_COMMIT") or None
    return info


def worker(args) -> None:
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    case = Case(**json.loads(args.worker))
    result = run_sdlora(case, args) if args.side == "sdlora" else run_plain(case, args)
    print("RESULT " + json.dumps(result))


def measure(case: Case, side: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(dataclasses.asdict(case)), "--side", side,
               "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    if args.tiny:
        command.append("--tiny")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1].removeprefix("RESULT "))


def combine(case: Case, sdlora: dict, plain: dict, peak: float | None) -> dict:
    row = {"case": case.name, **dataclasses.asdict(case), "sdlora": sdlora, "plain": plain}
    if "error" in sdlora or "error" in plain:
        return row
    row["ratio"] = sdlora["s_per_it"] / plain["s_per_it"]
    row["samples_per_s"] = case.batch / sdlora["s_per_it"]
    flops = plain.get("flops")
    row["tflop_per_step"] = flops / 1e12 if flops else None
    row["mfu"] = flops / (sdlora["s_per_it"] * peak * 1e12) if flops and peak else None
    row["mfu_plain"] = flops / (plain["s_per_it"] * peak * 1e12) if flops and peak else None
    measured, estimate = sdlora.get("peak_allocated_gb"), sdlora.get("estimate_gb")
    row["estimate_over_measured"] = estimate / measured if measured and estimate else None
    return row


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "–"


def markdown(rows: list[dict], info: dict) -> str:
    head = (f"{info.get('gpu', info['device'])}, driver {info.get('driver', '–')}, CUDA {info.get('cuda', '–')}, "
            f"torch {info['torch']}, commit {info.get('commit', '–')}")  # fmt: skip
    lines = [head, "", "| case | sdlora s/it | plain s/it | ratio | samples/s | peak alloc GB | peak reserved GB | "
             "estimate GB | est./meas. | TFLOP/step | MFU | MFU plain | 1st step s |", "|" + "---|" * 13]  # fmt: skip
    for r in rows:
        if "ratio" not in r:
            error = r["sdlora"].get("error") or r["plain"].get("error")
            lines.append(f"| {r['case']} | failed: {' '.join(error)} |" + " |" * 11)
            continue
        s, p = r["sdlora"], r["plain"]
        mfu = [_fmt(r[key] * 100, ".1f") + " %" if r[key] is not None else "–" for key in ("mfu", "mfu_plain")]
        cells = [
            r["case"], f"{s['s_per_it']:.3f}", f"{p['s_per_it']:.3f}", f"{r['ratio']:.3f}", f"{r['samples_per_s']:.2f}",
            _fmt(s["peak_allocated_gb"], ".2f"), _fmt(s["peak_reserved_gb"], ".2f"), _fmt(s["estimate_gb"], ".2f"),
            _fmt(r["estimate_over_measured"], ".2f"), _fmt(r["tflop_per_step"], ".2f"), *mfu,
            _fmt(s["first_step_s"], ".1f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", help="case names (default: all; --list shows them)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny models at 64 px (a smoke test, e.g. on a CPU)")
    parser.add_argument("--json", type=Path, help="write every result here (JSON)")
    parser.add_argument("--markdown", type=Path, help="write the table here (Markdown)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["sdlora", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    table = {case.name: case for case in cases(args.tiny)}
    if args.list:
        print("\n".join(f"{name}: {case}" for name, case in table.items()))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU on this machine: the GPU throughput benchmark needs one (docs/performance.md shows where it "
              "last ran). `--device cpu --tiny` runs the same code on the tiny models as a smoke test.")  # fmt: skip
        return
    unknown = [name for name in args.cases or [] if name not in table]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; --list shows the cases")
    info = environment(args.device)
    peak = peak_tflops(info.get("gpu", "")) if args.device == "cuda" else None
    if args.device == "cuda" and peak is None:
        print(f"{info['gpu']} is not in PEAK_BF16_TFLOPS: MFU is not reported")
    rows = []
    for name in args.cases or list(table):
        case = table[name]
        rows.append(combine(case, measure(case, "sdlora", args), measure(case, "plain", args), peak))
        print(json.dumps(rows[-1]), flush=True)
        write_results(args, info, rows)  # after every case: a run cut short keeps what it measured
    print(markdown(rows, info))
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        print(f"median ratio sdlora / plain: {statistics.median(ratios):.3f}")


def write_results(args, info: dict, rows: list[dict]) -> None:
    if args.json:
        args.json.write_text(json.dumps({"environment": info, "rows": rows}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(rows, info) + "\n")


if __name__ == "__main__":
    main()
