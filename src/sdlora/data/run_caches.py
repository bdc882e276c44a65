"""Run the caches a config asks for (``data.cache_latents``, ``data.cache_text_encoder_outputs``) once the model is
loaded and before training starts. Disk caches go to ``data.cache_dir`` or ``<run folder>/cache``.

With several processes (``trainer=ddp``) the datamodule runs them through :class:`DataCaches` in Lightning's two
data hooks: ``prepare_data`` on global rank 0 alone fills every cache (and writes the cache files) while the other
ranks wait; then ``setup`` on every other rank fills its own in-memory caches, reading rank 0's cache files and
writing none — no two processes ever write the same file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sdlora.config.schema import CacheMode, DataConfig
from sdlora.models.host_parts import caches_text, host_parts, move_parts

log = logging.getLogger("sdlora")


def cache_folder(data: DataConfig, run_dir: Path) -> Path:
    return Path(data.cache_dir).expanduser() if data.cache_dir else Path(run_dir) / "cache"


def prepare_caches(
    data_cfg: DataConfig, dataset, family, components, run_dir: Path, device: torch.device, write: bool = True
) -> dict[str, Any]:
    """Fill the dataset's latent and text caches; returns the reports by cache name. ``write=False``: use valid
    cache files but write none (every distributed rank but 0; see :class:`DataCaches`). The VAE and text encoders
    go to ``device`` to fill them and back to host memory after (:mod:`sdlora.models.host_parts`)."""
    from sdlora.data.latent_cache import cache_latents
    from sdlora.data.text_cache import cache_text_outputs
    from sdlora.utils.atomic import clean_leftovers

    folder = cache_folder(data_cfg, run_dir)
    if write:
        for sub in ("latents", "text"):
            clean_leftovers(folder / sub)
    reports: dict[str, Any] = {}
    mode = data_cfg.cache_latents
    if mode != CacheMode.none:
        components.vae.to(device)
        reports["latents"] = cache_latents(
            dataset, components.vae, mode=mode.value, folder=folder / "latents", batch_size=data_cfg.vae_batch_size,
            workers=data_cfg.num_workers, write=write,
        )  # fmt: skip
        _log("latents", reports["latents"], mode == CacheMode.disk)
    if caches_text(data_cfg):
        for encoder in components.text_encoders:
            encoder.to(device)
        to_disk = data_cfg.cache_text_encoder_outputs_to_disk
        reports["text"] = cache_text_outputs(
            dataset, family, components, to_disk=to_disk, folder=folder / "text", batch_size=data_cfg.batch_size,
            num_variants=data_cfg.caption_variants, write=write,
        )  # fmt: skip
        _log("text-encoder outputs", reports["text"], to_disk)
    move_parts(host_parts(data_cfg), components, "cpu")  # the training step does not call them
    return reports


def _log(what: str, report, to_disk: bool) -> None:
    where = f" in {report.folder}" if to_disk else " in memory"
    log.info("Cached %s%s: %d computed, %d reused", what, where, report.computed, report.reused)
    if report.damaged:
        more = f" and {len(report.damaged) - 3} more" if len(report.damaged) > 3 else ""
        log.warning(
            "%d %s cache file(s) did not match their checksum (damaged or overwritten) and were recomputed: %s%s",
            len(report.damaged), what, ", ".join(str(p) for p in report.damaged[:3]), more,
        )  # fmt: skip


class DataCaches:
    """The caches of one run, filled from the LightningDataModule's hooks (see the module docstring)."""

    def __init__(self, data_cfg: DataConfig, dataset, family, components, run_dir: Path) -> None:
        self.data_cfg = data_cfg
        self.dataset = dataset
        self.family = family
        self.components = components
        self.run_dir = Path(run_dir)
        self.filled = False

    @property
    def wanted(self) -> bool:
        return self.data_cfg.cache_latents != CacheMode.none or caches_text(self.data_cfg)

    def fill(self, device: torch.device, write: bool) -> None:
        """Fill the dataset's caches in this process (once)."""
        if self.wanted and not self.filled:
            prepare_caches(self.data_cfg, self.dataset, self.family, self.components, self.run_dir, device, write)
        self.filled = True
