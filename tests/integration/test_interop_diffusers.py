"""Interop contract: a LoRA trained by sdlora loads in diffusers' ``load_lora_weights`` with every module matched, and
the U-Net and text-encoder outputs equal a hand merge ``W += alpha/rank · up @ down`` of the file's tensors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sdlora.network.io import load_lora
from sdlora.network.naming import name_targets, text_encoder_namer
from sdlora.network.targets import text_encoder_targets, unet_targets
from sdlora.run import train
from tests.helpers.config import TINY_MODELS, compose_config, tiny_overrides


def hand_merge(family, components, tensors: dict[str, torch.Tensor]) -> int:
    """Fold every LoRA of the file into a copy of the base weights by the kohya formula; returns modules merged."""
    tables = [name_targets(unet_targets(components.unet, conv=True), family.unet_namer(components.unet))]
    for prefix, encoder in zip(family.te_prefixes, components.text_encoders, strict=True):
        tables.append(name_targets(text_encoder_targets(encoder), text_encoder_namer(prefix)))
    targets = {name: target for table in tables for name, target in table.items()}
    names = {key.rsplit(".", 2)[0] for key in tensors if key.endswith(".lora_down.weight")}
    with torch.no_grad():
        for name in names:
            down, up = tensors[f"{name}.lora_down.weight"].float(), tensors[f"{name}.lora_up.weight"].float()
            scale = float(tensors[f"{name}.alpha"]) / down.shape[0]
            weight = targets[name].module.weight
            weight += scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    return len(names)


def build_pipeline(family, components):
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    te, tok = components.text_encoders, components.tokenizers
    if len(te) == 2:
        return StableDiffusionXLPipeline(components.vae, te[0], te[1], tok[0], tok[1], components.unet, scheduler)
    return StableDiffusionPipeline(
        components.vae, te[0], tok[0], components.unet, scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip


def outputs(family, components) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    size_cond = torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)
    with torch.no_grad():
        text = family.encode_text(components, ["shapes, red circle", "tok, color 1"])
        unet = components.unet(latents, torch.tensor([50, 700]), **family.unet_inputs(text, size_cond)).sample
        out = {"unet": unet}
        for i, (encoder, tokenizer) in enumerate(zip(components.text_encoders, components.tokenizers, strict=True)):
            ids = tokenizer(["shapes, red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
            hidden = encoder(ids, output_hidden_states=True).hidden_states
            for layer, state in enumerate(hidden):
                out[f"te{i}.layer{layer}"] = state
    return out


def count_peft_layers(module: torch.nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in module.modules())


def diffusers_outputs(family, path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Outputs of the base model with ``path`` loaded by diffusers' ``load_lora_weights``, and its LoRA layer count."""
    components = copy.deepcopy(family.load())
    pipe = build_pipeline(family, components)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    loaded = count_peft_layers(pipe.unet) + sum(count_peft_layers(te) for te in components.text_encoders)
    return outputs(family, components), loaded


def _block_dims(count: int) -> str:
    return "network.block_dims=[" + ",".join(str(2 + i % 3) for i in range(count)) + "]"


#: LoCon (3×3 convs at rank 2) trained with all three dropouts and max-norm, ranks that differ per U-Net block and
#: one alpha throughout (diffusers reads one alpha for all attention projections: README), plus the PEFT export.
LOCON = {
    model: ["network=locon", "network.conv_rank=2", "network.conv_alpha=1", "network.dropout=0.1",
            "network.rank_dropout=0.1", "network.module_dropout=0.1", "network.scale_weight_norms=5",
            _block_dims(blocks), "save.also_diffusers=true"]
    for model, blocks in (("tiny", 25), ("tiny_sd2_v", 25), ("tiny_sdxl", 23))
}  # fmt: skip


@pytest.mark.parametrize("options", ["lora", "locon"])
@pytest.mark.parametrize("model", TINY_MODELS)
def test_trained_lora_loads_in_diffusers_and_matches_a_hand_merge(model, options, small_dataset, tmp_path):
    extra = LOCON[model] if options == "locon" else []
    cfg = compose_config(
        *tiny_overrides(small_dataset, "optimizer.lr=2e-2", "trainer.max_steps=3", *extra, model=model)
    )
    summary = train(cfg, tmp_path / "run")
    path = Path(summary["files"][0])
    tensors, metadata = load_lora(path)
    family = instantiate(cfg.model)

    base_out = outputs(family, family.load())  # the same seeded random base model the LoRA was trained on
    merged_components = family.load()
    merged_count = hand_merge(family, merged_components, tensors)
    expected = outputs(family, merged_components)
    got, loaded = diffusers_outputs(family, path)

    # every module of the file was matched by diffusers (no missing or unexpected keys)
    assert loaded == merged_count == len([k for k in tensors if k.endswith(".alpha")])
    effect = (expected["unet"] - base_out["unet"]).abs().max()
    assert effect > 1e-4, "the trained LoRA should change the U-Net output"
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-4, msg=key)
    te_effect = max((expected[k] - base_out[k]).abs().max() for k in expected if k.startswith("te"))
    assert te_effect > 1e-5, "the trained LoRA should change the text encoder output"
    assert metadata["ss_network_module"] == "networks.lora"
    downs = {k: v for k, v in tensors.items() if k.endswith(".lora_down.weight")}
    conv = [k for k, v in downs.items() if v.shape[2:] == (3, 3)]
    assert bool(conv) == (options == "locon"), "3×3 LoCon modules are part of the check"
    if options == "locon":
        assert {v.shape[0] for k, v in downs.items() if k.startswith("lora_unet_") and k not in conv} == {2, 3, 4}
        export = path.with_name(f"{path.stem}.diffusers.safetensors")
        assert summary["files"] == [str(path), str(export)]
        exported, _ = load_lora(export)
        assert len(exported) == 2 * len(downs) and all(
            k.endswith((".lora_A.weight", ".lora_B.weight")) for k in exported
        )
        got, loaded = diffusers_outputs(family, export)
        assert loaded == merged_count
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-4, msg=f"export {key}")
