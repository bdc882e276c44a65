"""Behavioural invariants of a LoRA network on tiny SD models, driven by a case table (docs/design.md §6.9).

zero-init ⇒ base output; one optimizer step changes only LoRA parameters; save → load is exact; merged weights give
the unmerged forward; the side that is not trained has no modules.
"""

from __future__ import annotations

import functools

import pytest
import torch

from sdlora.config.schema import NetworkConfig
from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
from sdlora.network.build import build_network
from sdlora.network.io import load_lora, save_lora
from sdlora.network.network import LoRANetwork

CASES = {
    "sd15": (TinySD15Family, dict(train_unet=True, train_text_encoder=True)),
    "sd15_unet_only": (TinySD15Family, dict(train_unet=True, train_text_encoder=False)),
    "sd15_te_only": (TinySD15Family, dict(train_unet=False, train_text_encoder=True)),
    "sdxl": (TinySDXLFamily, dict(train_unet=True, train_text_encoder=True)),
}
CAPTIONS = ["shapes, red circle", "a photo of a cat"]


def network_cfg(**kw):
    return NetworkConfig(rank=4, alpha=2.0, **kw)


def make(case: str):
    family_cls, sides = CASES[case]
    family = family_cls()
    components = family.load()
    network = build_network(family, components, network_cfg(**sides))
    return family, components, network


def forward(family, components) -> dict[str, torch.Tensor]:
    """U-Net output and text conditioning for fixed inputs."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    size_cond = torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)
    text = family.encode_text(components, CAPTIONS)
    unet_out = components.unet(latents, torch.tensor([10, 600]), **family.unet_inputs(text, size_cond)).sample
    out = {"unet": unet_out, "text": text.hidden_states}
    if text.pooled is not None:
        out["pooled"] = text.pooled
    return out


def base_state(components) -> dict[str, torch.Tensor]:
    """Every tensor of the U-Net, VAE and text encoders (LoRA wrappers included), keyed by model index and name."""
    models = [components.unet, components.vae, *components.text_encoders]
    return {f"{i}.{k}": v.detach() for i, m in enumerate(models) for k, v in m.state_dict().items()}


def randomise(network: LoRANetwork, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules.values():
            weight = module.lora_up.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)


@functools.cache
def base_forward(family_cls) -> dict[str, torch.Tensor]:
    """The forward of the family's model without any LoRA (computed once per family)."""
    family = family_cls()
    return forward(family, family.load())


@pytest.mark.parametrize("case", CASES)
def test_zero_init_gives_the_base_output(case):
    family_cls, _ = CASES[case]
    base = base_forward(family_cls)
    family, components, _network = make(case)
    out = forward(family, components)
    for key, value in base.items():
        assert torch.equal(out[key], value), key


@pytest.mark.parametrize("case", CASES)
def test_only_lora_parameters_change_after_a_step(case):
    family, components, network = make(case)
    frozen = {k: v.clone() for k, v in base_state(components).items() if "lora_" not in k and not k.endswith(".alpha")}
    lora_before = {k: v.clone() for k, v in network.kohya_tensors().items()}
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=1e-2)
    out = forward(family, components)
    loss = out["unet"].pow(2).mean() + out["text"].pow(2).mean()
    loss.backward()
    optimizer.step()
    after = base_state(components)
    for key, value in frozen.items():
        assert torch.equal(after[key], value), f"frozen weight changed: {key}"
    changed = [k for k, v in network.kohya_tensors().items() if "lora_up" in k and not torch.equal(v, lora_before[k])]
    assert changed, "no lora_up weight changed"
    assert all(p.requires_grad for p in network.trainable_parameters())
    base_params = [p for m in (components.unet, components.vae, *components.text_encoders) for p in m.parameters()]
    assert sum(p.requires_grad for p in base_params) == sum(1 for _ in network.trainable_parameters())


@pytest.mark.parametrize("case", CASES)
def test_save_load_round_trip_is_exact(case, tmp_path):
    family, components, network = make(case)
    randomise(network)
    expected = forward(family, components)
    path = save_lora(tmp_path / "lora.safetensors", network.kohya_tensors(), {"ss_network_dim": "4"})
    tensors, metadata = load_lora(path)
    assert metadata["ss_network_dim"] == "4" and "sshs_model_hash" in metadata

    family2, components2, network2 = make(case)
    network2.load_kohya_tensors(tensors)
    for key, value in network.kohya_tensors().items():
        assert torch.equal(network2.kohya_tensors()[key], value), key
    out = forward(family2, components2)
    for key, value in expected.items():
        assert torch.equal(out[key], value), key


@pytest.mark.parametrize("case", CASES)
def test_merged_weights_equal_the_unmerged_forward(case):
    family, components, network = make(case)
    randomise(network)
    unmerged = forward(family, components)
    network.merge()
    network.merge()  # idempotent
    merged = forward(family, components)
    for key, value in unmerged.items():
        torch.testing.assert_close(merged[key], value, atol=2e-5, rtol=1e-4)
    network.remove()
    removed = forward(family, components)
    for key, value in merged.items():
        assert torch.equal(removed[key], value), key
    assert not any("lora" in n for n, _ in components.unet.named_modules())


@pytest.mark.parametrize("case", CASES)
def test_untrained_side_gets_no_modules(case):
    family, _, network = make(case)
    _, sides = CASES[case]
    unet_names = network.names("lora_unet")
    te_names = [n for n in network.modules if n not in unet_names]
    assert bool(unet_names) == sides["train_unet"]
    assert bool(te_names) == sides["train_text_encoder"]
    prefixes = {n.split("_text_model_")[0] for n in te_names}
    assert prefixes <= set(family.te_prefixes)
    assert all("_text_model_" in n for n in te_names)  # kohya TE keys always carry text_model_


def test_sdxl_te1_last_layer_gets_no_gradient():
    """SDXL conditions on TE1's penultimate layer: its last layer's LoRA exists (kohya creates it), learns nothing."""
    family, components, network = make("sdxl")
    out = forward(family, components)
    (out["unet"].pow(2).mean() + out["text"].pow(2).mean() + out["pooled"].pow(2).mean()).backward()
    last = components.text_encoders[0].config.num_hidden_layers - 1
    last_layer = [m for n, m in network.modules.items() if n.startswith(f"lora_te1_text_model_encoder_layers_{last}_")]
    assert len(last_layer) == 6
    assert all(m.lora_up.weight.grad is None or not m.lora_up.weight.grad.any() for m in last_layer)
    other = network.modules["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"]
    assert other.lora_up.weight.grad is not None and other.lora_up.weight.grad.any()


def test_param_groups_follow_the_learning_rates():
    _, _, network = make("sd15")
    groups = network.param_groups(1e-4, unet_lr=3e-4, text_encoder_lr=None)
    by_name = {g["name"]: g for g in groups}
    assert by_name["unet"]["lr"] == 3e-4 and by_name["textencoder"]["lr"] == 1e-4
    total = sum(len(g["params"]) for g in groups)
    assert total == 2 * len(network)
    dropped = network.param_groups(1e-4, unet_lr=None, text_encoder_lr=0.0)
    assert [g["name"] for g in dropped] == ["unet"]
