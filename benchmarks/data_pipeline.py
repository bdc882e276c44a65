"""Data-pipeline benchmark on the tiny model: prints numbers measured in one run (nothing is asserted).

1. Latent-cache throughput (images/s, flips included) with ``data.num_workers`` 0, 1 and 2 decoding threads, in
   memory, and filling a disk cache.
2. A complete disk cache verified: the pass that reuses it — how many images were decoded (target 0), how many
   image files were read (once each: the SHA-256 of the key), and the share of the tensor checksums
   (:mod:`sdlora.data.cache_files`) in the pass.
3. A training epoch with ``data.cache_latents=memory``: the data loader's share of the step time (``next(loader)``
   against the whole step: U-Net forward/backward and AdamW; target ≤ 5 %), and the same epoch encoding every step.

Dry-run scaling with the dataset size is measured by ``benchmarks/dataset_scaling.py``.

    python benchmarks/data_pipeline.py [--cache-images 64] [--epoch-images 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_images(folder: Path, n: int) -> Path:
    """``n`` noisy images of 128–192 px in one ``4_bench`` folder, with captions."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(128, 128), (160, 128), (128, 160), (192, 128)]
    target = folder / "4_bench"
    target.mkdir(parents=True)
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(target / f"{i:04d}.png")
        (target / f"{i:04d}.txt").write_text(f"bench, image {i}")
    return folder


def build_data(root: Path, **options):
    from omegaconf import OmegaConf

    from sdlora.config.schema import DataConfig
    from sdlora.data.build import build_training_data

    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {"train_dir": str(root), "caption_extension": ".txt", "min_bucket_reso": 64, "max_bucket_reso": 1024,
         "batch_size": 4, **options},
    )  # fmt: skip
    return build_training_data(OmegaConf.to_object(cfg), (128, 128), 0, 1, -1, 1)


class Counting:
    """Counts calls of a module attribute while active (decodes, file hashes, checksums) and their time."""

    def __init__(self, module, name: str) -> None:
        self.module, self.name, self.calls, self.seconds = module, name, 0, 0.0
        self.original = getattr(module, name)

    def __enter__(self) -> Counting:
        def counted(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start

        setattr(self.module, self.name, counted)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.name, self.original)


def bench_cache(root: Path, folder: Path, vae, repeats: int) -> None:
    from sdlora.data import cache_files, latent_cache
    from sdlora.data.latent_cache import cache_latents

    images = len(build_data(root).dataset.records)
    print(f"1. latent cache, tiny VAE, {images} images + flips (vae_batch_size 8), best of {repeats} interleaved runs:")
    cache_latents(build_data(root).dataset, vae, mode="memory", batch_size=8, workers=0)  # warm-up
    best = {workers: math.inf for workers in (0, 1, 2)}
    computed = 0
    for _ in range(repeats):
        for workers in best:
            data = build_data(root, flip_aug=True)
            start = time.perf_counter()
            computed = cache_latents(data.dataset, vae, mode="memory", batch_size=8, workers=workers).computed
            best[workers] = min(best[workers], time.perf_counter() - start)
    for workers, seconds in best.items():
        print(f"   memory, data.num_workers={workers}: {computed / seconds:7.1f} latents/s ({seconds:.2f} s)")
    data = build_data(root, flip_aug=True)
    start = time.perf_counter()
    report = cache_latents(data.dataset, vae, mode="disk", folder=folder, batch_size=8, workers=2)
    seconds = time.perf_counter() - start
    print(f"   disk (filling), data.num_workers=2: {report.computed / seconds:7.1f} latents/s ({seconds:.2f} s)")
    data = build_data(root, flip_aug=True)
    with (
        Counting(latent_cache, "_decode") as decodes,
        Counting(latent_cache, "file_sha256") as reads,
        Counting(cache_files, "tensor_checksum") as checksums,
    ):
        start = time.perf_counter()
        report = cache_latents(data.dataset, vae, mode="disk", folder=folder, batch_size=8, workers=2)
        seconds = time.perf_counter() - start
    print(f"2. complete disk cache verified: {report.reused} latents reused, {report.computed} computed in "
          f"{seconds:.2f} s ({report.reused / seconds:.0f}/s); images decoded {decodes.calls}, image files read "
          f"{reads.calls} (of {images}); tensor checksums {checksums.calls} taking {checksums.seconds:.3f} s "
          f"({100 * checksums.seconds / seconds:.0f} % of the pass)")  # fmt: skip


def tiny_module(components, family, network):
    from sdlora.diffusion.objective import DiffusionObjective
    from sdlora.lit.module import LoRATrainingModule

    module = LoRATrainingModule(
        family, components, network, optimizer=None, scheduler=None, learning_rates={"default": 1e-4},
        total_steps=1, batches_per_epoch=1, objective=DiffusionObjective(components.prediction_type),
    )  # fmt: skip
    module.on_fit_start()
    return module


def epoch(data, module, optimizer) -> tuple[float, float]:
    """(seconds in the data loader, seconds in total) for one epoch of ``data``."""
    import torch
    from torch.utils.data import DataLoader

    from sdlora.data.batch import collate_batch

    loader = iter(DataLoader(data.dataset, batch_sampler=data.sampler, collate_fn=collate_batch))
    waiting = total = 0.0
    while True:
        start = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:
            break
        loaded = time.perf_counter()
        loss = (module.diffusion_loss(batch) * batch.loss_weight).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        waiting, total = waiting + loaded - start, total + done - start
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return waiting, total


def bench_epochs(root: Path, family, components, network, repeats: int) -> None:
    import torch

    from sdlora.data.latent_cache import cache_latents

    module = tiny_module(components, family, network)
    optimizer = torch.optim.AdamW(list(network.trainable_parameters()), lr=1e-4, foreach=True)
    cached, plain = build_data(root), build_data(root)
    cache_latents(cached.dataset, components.vae, mode="memory", batch_size=8)
    epoch(cached, module, optimizer)  # warm-up
    runs, plain_runs = [], []
    for _ in range(repeats):  # interleaved: the machine's load falls on both alike
        runs.append(epoch(cached, module, optimizer))
        plain_runs.append(epoch(plain, module, optimizer))
    steps = len(cached.sampler)
    waiting, total = min(runs, key=lambda run: run[1])
    plain_waiting, plain_total = min(plain_runs, key=lambda run: run[1])
    print(f"3. epoch of {len(cached.plan.entries)} samples ({steps} batches of 4, 128-px buckets), "
          f"the fastest of {repeats} interleaved epochs each:")  # fmt: skip
    print(f"   latents cached in memory: {total / steps * 1e3:.1f} ms per step, data loader "
          f"{100 * waiting / total:.1f} % of it (target ≤ 5 %)")  # fmt: skip
    print(f"   decoding + VAE every step:  {plain_total / steps * 1e3:.1f} ms per step, data loader "
          f"{100 * plain_waiting / plain_total:.1f} % of it; {plain_total / total:.2f}x the cached step")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-images", type=int, default=64, help="images of the cache dataset")
    parser.add_argument("--epoch-images", type=int, default=32, help="images of the epoch dataset")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from sdlora.config.schema import NetworkConfig
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    torch.manual_seed(0)
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    family = TinySD15Family()
    components = family.load()
    network = build_network(family, components, NetworkConfig(rank=4, alpha=4.0, train_text_encoder=False))
    with tempfile.TemporaryDirectory() as tmp:
        bench_cache(
            make_images(Path(tmp) / "cache", args.cache_images), Path(tmp) / "latents", components.vae, args.repeats
        )
        bench_epochs(make_images(Path(tmp) / "epoch", args.epoch_images), family, components, network, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
