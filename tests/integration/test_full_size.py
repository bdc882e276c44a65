"""The real user path at full size (slow; ``make test-all``): an A1111-style single-file checkpoint with the real
SD1.5 / SDXL architecture (random weights, fp16 on disk like released files) loads offline through the shipped config
and tokenizer, trains one step, and the LoRA file has kohya's module count and loads in diffusers."""

from __future__ import annotations

import pytest
import torch

from sdlora.models.configs import config_dir
from sdlora.models.ldm_keys import write_checkpoint
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config

pytestmark = pytest.mark.slow

CASES = {
    "sd15": ("sd1", ("CLIPTextModel",), {"lora_unet": 192, "lora_te": 72}),
    "sdxl": (
        "sdxl",
        ("CLIPTextModel", "CLIPTextModelWithProjection"),
        {"lora_unet": 722, "lora_te1": 72, "lora_te2": 192},
    ),
}


def build_random(name: str, encoders: tuple[str, ...]):
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = config_dir(name)
    torch.manual_seed(0)
    with torch.device("cpu"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")).to(torch.float16)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")).to(torch.float16)
        tes = [
            getattr(transformers, cls)(transformers.CLIPTextConfig.from_pretrained(folder / sub)).to(torch.float16)
            for cls, sub in zip(encoders, ("text_encoder", "text_encoder_2"), strict=False)
        ]
    return unet, vae, tes


@pytest.mark.parametrize("name", CASES)
def test_full_size_single_file_trains_one_step(name, small_dataset, tmp_path):
    layout, encoders, counts = CASES[name]
    unet, vae, tes = build_random(name, encoders)
    ckpt = write_checkpoint(tmp_path / f"{name}.safetensors", unet=unet, vae=vae, text_encoders=tes, layout=layout)
    del unet, vae, tes
    cfg = compose_config(
        f"model={name}", f"model.pretrained={ckpt}", f"data.train_dir={small_dataset}", "data.caption_extension=.txt",
        "data.resolution=256", "data.batch_size=1", "trainer.max_steps=1", "precision=bf16_mixed",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "model.gradient_checkpointing=true",
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run")
    tensors, meta = load_lora(summary["files"][0])
    names = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".alpha")}
    assert {p: sum(n.startswith(p + "_") for n in names) for p in counts} == counts
    assert meta["ss_sd_model_name"] == ckpt.name and len(meta["ss_new_sd_model_hash"]) == 64
    assert all(v.dtype == torch.float32 for v in tensors.values())
