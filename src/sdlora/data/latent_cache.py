"""Latent cache [kohya: --cache_latents, --cache_latents_to_disk, --vae_batch_size] (docs/kohya.md §6.4).

Each used image is encoded once (twice with ``flip_aug``: the flipped image too), from its centred crop, in batches
of ``data.vae_batch_size`` images of one bucket, sorted by bucket area. What is cached is the VAE *posterior* —
its mean and standard deviation — so a training step still draws a fresh latent z = mean + std·ε exactly as the
uncached path does (kohya caches one sample). ``data.cache_latents=memory`` keeps them in RAM for this run;
``disk`` writes them as cache files (:mod:`sdlora.data.cache_files`) whose key holds the image bytes' hash, bucket,
resize, crop, flip, the VAE's fingerprint and dtype, so a file made under any other condition is never reused.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from sdlora.data.cache_files import DAMAGED, DiskCache, module_fingerprint
from sdlora.errors import SdloraError
from sdlora.utils.hashing import file_sha256

LATENT_FORMAT = 1  # bump when the preprocessing (resize filters, crop rule, normalisation) changes


@dataclass
class CacheReport:
    """What a caching pass did (for the log and the tests)."""

    computed: int = 0
    reused: int = 0
    folder: Path | None = None
    computed_keys: list[dict] = field(default_factory=list)
    damaged: list[Path] = field(default_factory=list)  # files that did not match their checksum (recomputed)

    def note(self, problem: str, path: Path | None) -> None:
        """Remember a cache file that cannot be reused because it is damaged (it is recomputed; the log says so)."""
        if problem == DAMAGED and path is not None:
            self.damaged.append(path)


def latent_key(digest: str, fit, flipped: bool, vae_id: str, vae_dtype: torch.dtype) -> dict[str, Any]:
    """Everything a cached posterior depends on."""
    return {
        "kind": "latents",
        "format": LATENT_FORMAT,
        "image_sha256": digest,
        "original": list(fit.original),
        "resized": list(fit.resized),
        "bucket": list(fit.bucket),
        "crop": list(fit.offset),
        "flipped": bool(flipped),
        "vae": vae_id,
        "dtype": str(vae_dtype).removeprefix("torch."),
    }


class LatentStore:
    """Cached posteriors by (record, flipped): tensors in memory, or cache files loaded when a sample asks."""

    def __init__(self) -> None:
        self.memory: dict[tuple[int, bool], dict[str, torch.Tensor]] = {}
        self.files: dict[tuple[int, bool], Path] = {}

    def get(self, record: int, flipped: bool) -> dict[str, torch.Tensor]:
        key = (record, flipped)
        tensors = self.memory.get(key)
        if tensors is None:
            tensors = DiskCache.load(self.files[key])
        return {"latent_mean": tensors["mean"], "latent_std": tensors["std"]}


@dataclass(frozen=True)
class _Job:
    record: int
    flipped: bool
    fit: Any


def _jobs(dataset) -> list[_Job]:
    """One job per used image (and flip), sorted by bucket area as kohya caches, in record order within a bucket."""
    used = sorted({e.record for e in dataset.entries})
    first_entry = {}
    for entry in dataset.entries:
        first_entry.setdefault(entry.record, entry)
    jobs = []
    for record in used:
        fit = dataset.fit(first_entry[record])
        flips = (False, True) if dataset.records[record].subset.options.flip_aug else (False,)
        jobs += [_Job(record, flipped, fit) for flipped in flips]
    return sorted(jobs, key=lambda j: (j.fit.bucket[0] * j.fit.bucket[1], j.fit.bucket, j.record, j.flipped))


def _decode(dataset, job: _Job) -> tuple[str, np.ndarray]:
    """(SHA-256 of the bytes read, pixels [3, H, W]) of one job's image, from one read of the file."""
    from sdlora.data.dataset import bucket_pixels

    path = dataset.records[job.record].path
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except Exception as exc:
        raise SdloraError(
            f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}). The data plan reads image headers and "
            "checks that files are complete; this one is damaged inside: replace or remove it"
        ) from None
    return hashlib.sha256(data).hexdigest(), bucket_pixels(rgb, job.fit, job.flipped)


def _batches(jobs: list[_Job], size: int) -> Iterator[list[_Job]]:
    """Consecutive jobs of one bucket, at most ``size`` per batch."""
    batch: list[_Job] = []
    for job in jobs:
        if batch and (len(batch) >= size or batch[-1].fit.bucket != job.fit.bucket):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


@torch.no_grad()
def encode_posterior(vae: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 3, H, W] in [−1, 1] → the VAE posterior's mean and std [B, C, H/8, W/8] (in the VAE's dtype)."""
    device = next(vae.parameters()).device
    with torch.autocast(device_type=device.type, enabled=False):
        posterior = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
    return posterior.mean, posterior.std


def cache_latents(
    dataset,
    vae: torch.nn.Module,
    *,
    mode: str,
    folder: Path | None = None,
    batch_size: int = 1,
    workers: int = 0,
    vae_id: str | None = None,
    write: bool = True,
) -> CacheReport:
    """Fill ``dataset.latents`` with the posterior of every used image (and its flip); see the module docstring.

    ``write=False`` (distributed ranks other than 0): valid cache files are used, missing ones are computed into
    memory and not written, so that only one process writes into the cache folder.
    """
    vae_id = vae_id or module_fingerprint(vae)
    vae_dtype = next(vae.parameters()).dtype
    disk = DiskCache(folder) if mode == "disk" else None
    store, report = LatentStore(), CacheReport(folder=folder)
    jobs = _jobs(dataset)
    channels = int(getattr(getattr(vae, "config", None), "latent_channels", 4))
    todo = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if disk is not None:  # each image's bytes are read once (a flipped job shares its image's hash), not decoded
            records = sorted({job.record for job in jobs})
            hashes = pool.map(lambda record: file_sha256(dataset.records[record].path), records)
            digests = dict(zip(records, hashes, strict=True))
            for job in jobs:
                key = latent_key(digests[job.record], job.fit, job.flipped, vae_id, vae_dtype)
                w, h = job.fit.bucket
                shape = (channels, h // 8, w // 8)
                problem = disk.problem(key, {"mean": shape, "std": shape})
                if problem is None:
                    store.files[(job.record, job.flipped)] = disk.path(key)
                    report.reused += 1
                else:
                    report.note(problem, disk.path(key))
                    todo.append(job)
        else:
            todo = jobs
        progress = tqdm(total=len(todo), desc="Caching latents", unit="img", disable=not todo)
        batches = list(_batches(todo, batch_size))
        pending = [pool.submit(_decode, dataset, job) for job in batches[0]] if batches else []
        for i, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            if i + 1 < len(batches):  # decode the next batch while the VAE encodes this one
                pending = [pool.submit(_decode, dataset, job) for job in batches[i + 1]]
            _encode_batch(dataset, vae, batch, decoded, store, disk if write else None, report, vae_id, vae_dtype)
            progress.update(len(batch))
        progress.close()
    dataset.latents = store
    return report


def _encode_batch(dataset, vae, batch, decoded, store, disk, report, vae_id, vae_dtype) -> None:
    pixels = torch.from_numpy(np.stack([pixels for _, pixels in decoded]))  # [B, 3, H, W]
    mean, std = encode_posterior(vae, pixels)  # [B, C, h, w]
    for i, job in enumerate(batch):
        if not (torch.isfinite(mean[i]).all() and torch.isfinite(std[i]).all()):
            raise SdloraError(
                f"NaN detected in latents of {dataset.records[job.record].path}: the VAE overflowed (typical of the "
                "SDXL VAE in fp16); use precision=fp32 / bf16_mixed or a fixed VAE (model.vae=...)"
            )
        tensors = {"mean": mean[i].detach().cpu().clone(), "std": std[i].detach().cpu().clone()}
        key = latent_key(decoded[i][0], job.fit, job.flipped, vae_id, vae_dtype)
        if disk is not None:
            store.files[(job.record, job.flipped)] = disk.write(key, tensors)
        else:
            store.memory[(job.record, job.flipped)] = tensors
        report.computed += 1
        report.computed_keys.append(key)
