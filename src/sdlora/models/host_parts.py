"""Frozen parts of the model that wait in host memory while the run trains.

Once the latents are cached (``data.cache_latents``) the training step never calls the VAE, and once the text-encoder
outputs are cached (``data.cache_text_encoder_outputs``, which excludes training the text encoders) it never calls the
text encoders. Those parts go to the accelerator to fill the caches, and again to sample images and to compute the
validation loss, and back to host memory after each (kohya moves them the same way: docs/kohya.md §6.4). The
LightningModule does not hold them as submodules, so Lightning's move of the model to the accelerator leaves them
where they are; the memory estimate leaves them out of the training peak and counts them at sampling
(:mod:`sdlora.memory`).

The rule is read before torch is imported (the estimate runs in a dry run): torch is imported by the moves only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from sdlora.config.schema import DataConfig


@dataclass(frozen=True)
class HostParts:
    """Which frozen parts wait in host memory: the VAE, the text encoders."""

    vae: bool = False
    text_encoders: bool = False

    @classmethod
    def of(cls, latents_cached: bool, text_cached: bool) -> HostParts:
        """The VAE with a latent cache, the text encoders with cached outputs."""
        return cls(vae=latents_cached, text_encoders=text_cached)

    def modules(self, components: Any) -> list[nn.Module]:
        """These parts of ``components`` (a :class:`sdlora.models.family.Components`)."""
        parts = [components.vae] if self.vae else []
        return parts + list(components.text_encoders) if self.text_encoders else parts


def caches_text(data: DataConfig) -> bool:
    """Whether the run caches text-encoder outputs (in memory, or on disk)."""
    return bool(data.cache_text_encoder_outputs or data.cache_text_encoder_outputs_to_disk)


def host_parts(data: DataConfig) -> HostParts:
    """The parts a run's caches leave in host memory."""
    from sdlora.config.schema import CacheMode

    return HostParts.of(data.cache_latents != CacheMode.none, caches_text(data))


def move_parts(parts: HostParts, components: Any, device: Any) -> None:
    """Move ``parts`` of ``components`` to ``device``; back to the host (``"cpu"``), the accelerator's cached blocks
    are released, so that the memory they held is free for other processes too."""
    import torch

    modules = parts.modules(components)
    for module in modules:
        module.to(device)
    if modules and torch.device(device).type == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def parts_on(parts: HostParts, components: Any, device: Any) -> Iterator[None]:
    """``parts`` on ``device`` for the duration (sampling), in host memory again after."""
    move_parts(parts, components, device)
    try:
        yield
    finally:
        move_parts(parts, components, "cpu")
