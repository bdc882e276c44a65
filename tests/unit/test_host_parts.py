"""The VAE and text encoders wait in host memory once their caches are made (:mod:`sdlora.models.host_parts`): the
rule, the LightningModule that leaves them out of its move to the accelerator, and the moves for sampling and
validation. On a CUDA GPU, where the devices differ: tests/gpu/test_cuda_host_parts.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sdlora.models.host_parts import HostParts, host_parts, move_parts, parts_on
from tests.helpers.config import EXAMPLE_DATA, resolved

TE_FROZEN = "network.train_text_encoder=false"  # cached text-encoder outputs need it


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), HostParts()),
        (("data.cache_latents=memory",), HostParts(vae=True)),
        (("data.cache_latents=disk", "data.cache_text_encoder_outputs=true", TE_FROZEN), HostParts(True, True)),
        (("data.cache_text_encoder_outputs_to_disk=true", TE_FROZEN), HostParts(text_encoders=True)),
    ],
)
def test_the_parts_a_run_caches_wait_in_host_memory(overrides, expected):
    config = resolved("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", *overrides)
    assert host_parts(config.data) == expected


class _Recording(nn.Module):
    """A module that records where it is sent instead of going there."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.moves: list[str] = []

    def to(self, device, *args, **kwargs):
        self.moves.append(str(device))
        return self


def test_sampling_brings_the_host_parts_over_and_sends_them_back_even_when_it_fails():
    components = SimpleNamespace(vae=_Recording(), text_encoders=[_Recording(), _Recording()])
    with parts_on(HostParts(vae=True, text_encoders=True), components, "cuda:0"):
        assert [m.moves for m in (components.vae, *components.text_encoders)] == [["cuda:0"]] * 3
    with pytest.raises(RuntimeError), parts_on(HostParts(text_encoders=True), components, "cuda:0"):
        raise RuntimeError("out of memory")
    assert components.vae.moves == ["cuda:0", "cpu"]
    assert components.text_encoders[0].moves == ["cuda:0", "cpu", "cuda:0", "cpu"]
    move_parts(HostParts(), components, "cuda:0")  # nothing waits in host memory: nothing moves
    assert components.vae.moves == ["cuda:0", "cpu"]


def _module(tmp_path, *overrides: str):
    from sdlora.assemble import assemble
    from sdlora.builders import make_module
    from sdlora.network.build import build_network

    config = resolved("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", *overrides)
    run = assemble(config, tmp_path)
    components = run.family.load()
    return make_module(run, components, build_network(run.family, components, run.config.network)), components


def _devices(module: nn.Module) -> set[str]:
    return {p.device.type for p in module.parameters()}


def test_the_module_leaves_the_host_parts_where_they_are(tmp_path):
    """Lightning moves the LightningModule to the accelerator with ``.to``; "meta" stands in for it here. The VAE
    and the text encoders stay in host memory once cached, and FSDP is not asked to keep the VAE whole."""
    module, components = _module(
        tmp_path, "data.cache_latents=memory", "data.cache_text_encoder_outputs=true", TE_FROZEN
    )
    module.to("meta")
    assert _devices(components.unet) == {"meta"}
    assert _devices(components.vae) == {"cpu"}
    assert all(_devices(encoder) == {"cpu"} for encoder in components.text_encoders)
    assert all(m is not components.vae for m in module.unsharded_modules())
    module.train()  # the frozen parts' modes are still set
    assert not components.vae.training and not any(encoder.training for encoder in components.text_encoders)


def test_without_caches_every_part_moves_with_the_module(tmp_path):
    module, components = _module(tmp_path)
    module.to("meta")
    parts = (components.unet, components.vae, *components.text_encoders)
    assert all(_devices(part) == {"meta"} for part in parts)
    assert module.unsharded_modules()[-1] is components.vae
