"""Data-pipeline benchmark: prints numbers measured in one run (nothing is asserted).

1. Planning time for 100k synthetic image headers (target < 5 s): sizes as the scan would read them → buckets,
   regularisation balance, entries, sampler, training length, data plan, data_plan.json text and the printed table.
2. Epoch time on a tiny model with latents cached vs encoded every step (same data, same steps), and the ratio.
3. Latent-cache throughput (images/s) in memory and on disk, and the reuse pass of the disk cache.

    python benchmarks/data_pipeline.py [--images 100000] [--epoch-images 24] [--cache-images 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def synthetic_scan(n: int, folders: int = 20, seed: int = 0):
    """A ScanResult of ``n`` images with camera-like sizes spread over ``folders`` folders (no files are read)."""
    from sdlora.data.folders import Subset
    from sdlora.data.records import ImageRecord, ScanResult

    rng = np.random.default_rng(seed)
    subsets = [Subset(Path(f"/data/{i + 1}_concept{i}"), i % 5 + 1, f"concept{i}") for i in range(folders)]
    ratios = rng.choice([1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 0.5], size=n)
    areas = rng.uniform(0.3e6, 12e6, size=n)
    widths = np.sqrt(areas * ratios).astype(int)
    heights = (areas / np.sqrt(areas * ratios)).astype(int)
    scan = ScanResult(subsets=subsets)
    for i in range(n):
        subset = subsets[i % folders]
        path = subset.directory / f"{i:06d}.jpg"
        scan.records.append(ImageRecord(path, (int(widths[i]), int(heights[i])), "a, b, c", subset, True, f"{i:064x}"))
    for subset in subsets:
        scan.images_per_subset[subset.directory] = n // folders
        scan.captions_per_subset[subset.directory] = n // folders
    return scan


def bench_planning(n: int) -> None:
    from sdlora.data.buckets import BucketSpec
    from sdlora.data.build import plan_training_data

    scan = synthetic_scan(n)
    spec = BucketSpec(True, (1024, 1024), 256, 2048, 64, False)
    start = time.perf_counter()
    data = plan_training_data(scan, spec, 4, 0, 1, -1, 10)
    planned = time.perf_counter()
    text = json.dumps(data.plan.to_json())
    table = data.plan.format()
    done = time.perf_counter()
    print(
        f"planning {n:,} images ({len(data.plan.entries):,} samples with repeats, {len(data.plan.buckets())} buckets):"
    )
    print(f"  buckets + entries + sampler + plan: {planned - start:.2f} s")
    print(
        f"  data_plan.json ({len(text) / 1e6:.1f} MB) + table ({len(table.splitlines())} lines): {done - planned:.2f} s"
    )
    print(f"  total: {done - start:.2f} s (target < 5 s)")


def _dataset(folder: Path, n: int) -> Path:
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


def _build(root: Path, **kw):
    from omegaconf import OmegaConf

    from sdlora.config.schema import DataConfig
    from sdlora.data.build import build_training_data

    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {"train_dir": str(root), "caption_extension": ".txt", "min_bucket_reso": 64, "batch_size": 4, **kw},
    )
    return build_training_data(cfg, (128, 128), 0, 1, -1, 1, bucket_defaults=(64, 1024))


def _epoch_seconds(data, module, optimizer) -> float:
    import torch
    from torch.utils.data import DataLoader

    from sdlora.data.dataset import collate_batch

    loader = DataLoader(data.dataset, batch_sampler=data.sampler, collate_fn=collate_batch)
    start = time.perf_counter()
    for batch in loader:
        loss = (module.diffusion_loss(batch) * batch["loss_weight"]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - start


def bench_epochs(root: Path, repeats: int = 2) -> None:
    from types import SimpleNamespace

    import torch

    from sdlora.data.latent_cache import cache_latents
    from sdlora.diffusion.objective import DiffusionObjective
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network

    family = TinySD15Family()
    components = family.load()
    net_cfg = SimpleNamespace(rank=4, alpha=4.0, train_unet=True, train_text_encoder=False)
    network = build_network(family, components, net_cfg)
    module = LoRATrainingModule(
        family, components, network, optimizer=None, scheduler=None, learning_rates={"default": 1e-4},
        total_steps=1, batches_per_epoch=1, objective=DiffusionObjective(components.prediction_type),
    )  # fmt: skip
    module.on_fit_start()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    plain, cached = _build(root), _build(root)
    start = time.perf_counter()
    cache_latents(cached.dataset, components.vae, mode="memory", batch_size=4)
    cache_time = time.perf_counter() - start
    _epoch_seconds(plain, module, optimizer)  # warm-up
    t_plain = statistics.median(_epoch_seconds(plain, module, optimizer) for _ in range(repeats))
    t_cached = statistics.median(_epoch_seconds(cached, module, optimizer) for _ in range(repeats))
    n = len(plain.plan.entries)
    print(f"tiny SD1.5 epoch of {n} samples ({len(plain.sampler)} batches of 4, 128-px buckets), median of {repeats}:")
    print(f"  images decoded + VAE every step: {t_plain:.2f} s")
    print(f"  latents cached in memory:        {t_cached:.2f} s (caching took {cache_time:.2f} s once)")
    print(f"  ratio uncached / cached: {t_plain / t_cached:.2f}x")


def bench_cache(root: Path, folder: Path) -> None:
    from sdlora.data.latent_cache import cache_latents
    from sdlora.models.tiny import TinySD15Family

    components = TinySD15Family().load()
    count = len({e.record for e in _build(root).dataset.entries})
    for mode in ("memory", "disk", "disk"):
        data = _build(root, flip_aug=True)
        start = time.perf_counter()
        report = cache_latents(data.dataset, components.vae, mode=mode, folder=folder, batch_size=8, workers=2)
        seconds = time.perf_counter() - start
        what = "reuse pass" if report.reused else "computed"
        done = report.computed + report.reused
        rate = done / seconds
        print(f"  {mode:<6} {what:<10}: {done} latents ({count} images + flips) in {seconds:.2f} s = {rate:.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="synthetic image headers to plan")
    parser.add_argument("--epoch-images", type=int, default=24, help="images of the epoch-time dataset")
    parser.add_argument("--cache-images", type=int, default=48, help="images of the cache-throughput dataset")
    args = parser.parse_args()
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    bench_planning(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        bench_epochs(_dataset(Path(tmp) / "epoch", args.epoch_images))
        print("latent-cache throughput (tiny VAE, 128-px buckets, vae_batch_size 8, 2 decoding threads):")
        bench_cache(_dataset(Path(tmp) / "cache", args.cache_images), Path(tmp) / "latents")


if __name__ == "__main__":
    main()
