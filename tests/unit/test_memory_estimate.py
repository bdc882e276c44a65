"""The memory estimate before launch (:mod:`sdlora.memory`): its parts follow the run's options, the activation
formula agrees with what autograd saves, ``dry_run`` prints it, and ``trainer.memory_budget_gb`` stops a run before
the model is loaded, naming options that fit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.memory import GB, RunShape, estimate, human, optimizer_bytes, unet_activations
from sdlora.memory_budget import budget_message
from sdlora.models.configs import config_dir
from sdlora.models.sizes import model_size
from sdlora.utils.saved_bytes import saved_bytes
from tests.helpers.config import EXAMPLE_DATA, TINY_MODELS, compose_config

SDXL = model_size(config_dir("sdxl"))
SD15 = model_size(config_dir("sd15"))
XL_1024 = RunShape(weight_dtype="bfloat16", vae_dtype="float32", autocast=True, bucket=(1024, 1024), rank=32)


def test_frozen_weights_follow_the_dtypes():
    e = estimate(SDXL, XL_1024)
    assert e.weights["U-Net"] == SDXL.unet.params * 2
    assert e.weights["VAE"] == SDXL.vae.params * 4  # no_half_vae (SDXL)
    fp32 = estimate(SDXL, dataclasses.replace(XL_1024, weight_dtype="float32", autocast=False))
    assert fp32.weights["U-Net"] == 2 * e.weights["U-Net"]


def test_lora_parameters_are_rank_times_the_target_sums():
    e = estimate(SD15, RunShape(rank=16))
    assert e.lora_params == 16 * SD15.unet.lora.attention
    with_te = estimate(SD15, RunShape(rank=16, train_text_encoder=True))
    assert with_te.lora_params == e.lora_params + 16 * SD15.text_encoders[0].lora.attention
    locon = estimate(SD15, RunShape(rank=16, network="locon", conv_rank=8))
    assert locon.lora_params == e.lora_params + 16 * SD15.unet.lora.resnet_linear + 8 * SD15.unet.lora.resnet_conv
    assert e.lora_bytes == 2 * e.lora_params * 4  # parameters and gradients in float32


@pytest.mark.parametrize(
    ("name", "lora_bytes", "per_parameter"),
    [
        ("torch.optim.AdamW", 4, 8.0), ("torch.optim.AdamW", 2, 4.0), ("bitsandbytes.optim.AdamW8bit", 4, 2.0),
        ("bitsandbytes.optim.PagedLion8bit", 4, 1.0), ("lion_pytorch.Lion", 4, 4.0), ("prodigyopt.Prodigy", 4, 16.0),
        ("dadaptation.DAdaptAdam", 4, 12.0), ("torch.optim.SGD", 4, 4.0), ("bitsandbytes.optim.AdamW", 2, 8.0),
    ],
)  # fmt: skip
def test_optimizer_state_per_parameter(name, lora_bytes, per_parameter):
    assert optimizer_bytes(name, lora_bytes)[0] == per_parameter


def test_adafactor_state_is_factored_and_unknown_optimizers_are_noted():
    """Adafactor's means are small on Linear layers (SDXL's attention) and on a full fine-tune, but a 1×1 conv's
    weight (SD1.5's proj_in / proj_out) has four dimensions, and its row and column means are each as large as it."""
    adafactor = "transformers.optimization.Adafactor"
    adam = estimate(SD15, RunShape(rank=32))
    assert 0 < estimate(SDXL, RunShape(rank=32, optimizer=adafactor)).optimizer_bytes < adam.optimizer_bytes / 10
    full = RunShape(network="full", rank=1, preset="attn-only")
    assert estimate(SDXL, dataclasses.replace(full, optimizer=adafactor)).optimizer_bytes < (
        estimate(SDXL, full).optimizer_bytes / 100
    )
    convs = estimate(SD15, RunShape(rank=32, optimizer=adafactor))
    assert adam.optimizer_bytes / 10 < convs.optimizer_bytes < adam.optimizer_bytes / 4
    momentum = estimate(SD15, RunShape(rank=32, optimizer=adafactor, first_moment=True))
    assert momentum.optimizer_bytes == convs.optimizer_bytes + adam.optimizer_bytes / 2
    unknown = estimate(SD15, RunShape(optimizer="mypackage.Magic"))
    assert unknown.optimizer_bytes == adam.optimizer_bytes / 4 and "not in the estimate's table" in unknown.notes[0]


def test_activations_scale_with_pixels_and_batch_and_checkpointing_saves():
    one = estimate(SDXL, XL_1024)
    four = estimate(SDXL, dataclasses.replace(XL_1024, batch_size=4))
    assert four.activations == pytest.approx(4 * one.activations)
    half = estimate(SDXL, dataclasses.replace(XL_1024, bucket=(512, 512)))
    assert 3.5 < one.activations / half.activations < 4.1  # ∝ pixels, apart from the text's keys and values
    checkpointed = estimate(SDXL, dataclasses.replace(XL_1024, gradient_checkpointing=True))
    assert checkpointed.activations < one.activations / 5
    assert checkpointed.activations_other == one.activations and one.activations_other == checkpointed.activations


def test_encoding_without_a_latent_cache_and_host_memory_with_one():
    assert estimate(SD15, RunShape(cache_latents="none")).encode_peak > 0
    disk = estimate(SD15, RunShape(cache_latents="disk", cached_images=100))
    assert disk.encode_peak == 0 and disk.host_cached_latents == 0
    memory = estimate(SD15, RunShape(cache_latents="memory", cached_images=100, bucket=(512, 512)))
    assert memory.host_cached_latents == 100 * 4 * 64 * 64 * 2 * 4  # mean and std, float32


def _saved_bytes(unet, *inputs, **kwargs) -> int:
    """Bytes of the tensors autograd keeps for backward (storages other than the model's own)."""
    with saved_bytes(unet) as saved:
        unet(*inputs, **kwargs)
    return saved[0]


NETWORKS_SAVED = [("lora", {}), ("locon", {"conv_rank": 4}), ("lycoris_locon", {}),
                  ("lycoris_locon", {"bypass_mode": True}), ("loha", {}), ("boft", {}), ("glora", {})]  # fmt: skip


@pytest.mark.parametrize(("network", "options"), NETWORKS_SAVED)
@pytest.mark.parametrize("family", TINY_MODELS)
def test_the_activation_formula_agrees_with_what_autograd_saves(family, network, options):
    """The estimate's activations (without the gradient allowance) against a real step's saved tensors: a LoRA and
    kohya's LoCon (the resnet convs' inputs kept too), and LyCORIS's types under the full preset, which rebuild each
    weight (kept for backward; not in bypass mode)."""
    from sdlora.config.schema import LycorisPreset, NetworkConfig, NetworkType
    from sdlora.memory_params import network_parameters
    from sdlora.network.build import build_network
    from sdlora.tools.families import family as make_family

    torch.manual_seed(0)
    fam = make_family(family)
    components = fam.load()
    preset = LycorisPreset.full if network not in ("lora", "locon") else None
    config = NetworkConfig(name=NetworkType(network), rank=4, alpha=4.0, train_text_encoder=False, preset=preset,
                           **options)  # fmt: skip
    build_network(fam, components, config)
    size = model_size(config_dir(family))
    counted = network_parameters(size, RunShape(network=network, rank=4, **options))
    assert counted.block_convs == (network != "lora") and bool(counted.rebuilt) == bool(preset and not options)
    unet, batch, side = components.unet, 2, 16
    kwargs = {"encoder_hidden_states": torch.randn(batch, 77, unet.config.cross_attention_dim)}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled), "time_ids": torch.zeros(batch, 6)}
    measured = _saved_bytes(unet, torch.randn(batch, 4, side, side), torch.tensor([10, 500]), **kwargs)
    activations = unet_activations(size.unet, (side, side), locon=counted.block_convs).full
    predicted = (batch * activations + counted.rebuilt) * 4
    assert predicted == pytest.approx(measured, rel=0.15)


@pytest.mark.parametrize("network", ["lora", "locon"])
@pytest.mark.parametrize("family", TINY_MODELS)
def test_the_mixed_precision_formula_agrees_with_what_autograd_saves(family, network):
    """precision=bf16_mixed: bfloat16 frozen model, float32 LoRA, bf16 autocast (the coefficients of
    benchmarks/fit_activations.py, fitted on larger U-Nets) — within 15 % on the tiny models too."""
    from sdlora.config.schema import NetworkConfig, NetworkType
    from sdlora.memory import COEFFICIENTS_BY_KIND
    from sdlora.network.build import build_network
    from sdlora.tools.families import family as make_family

    torch.manual_seed(0)
    fam = make_family(family)
    components = fam.load(torch.bfloat16)
    locon = network == "locon"
    config = NetworkConfig(name=NetworkType(network), rank=4, alpha=4.0, train_text_encoder=False,
                           conv_rank=4 if locon else None)  # fmt: skip
    build_network(fam, components, config)
    unet, batch, side = components.unet, 2, 32
    kwargs = {"encoder_hidden_states": torch.randn(batch, 77, unet.config.cross_attention_dim, dtype=torch.bfloat16)}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, dtype=torch.bfloat16),
                                       "time_ids": torch.zeros(batch, 6, dtype=torch.bfloat16)}  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents = torch.randn(batch, 4, side, side, dtype=torch.bfloat16)
        measured = _saved_bytes(unet, latents, torch.tensor([10, 500]), **kwargs)
    size = model_size(config_dir(family))
    activations = unet_activations(size.unet, (side, side), coefficients=COEFFICIENTS_BY_KIND["mixed"], locon=locon)
    assert batch * activations.full * 2 == pytest.approx(measured, rel=0.15)


def test_budget_names_options_that_fit():
    big = dataclasses.replace(XL_1024, batch_size=4)
    e = estimate(SDXL, big)
    assert budget_message(e, e.peak / GB + 0.01, SDXL, big) is None
    message = budget_message(e, 24, SDXL, big)
    assert "exceeds trainer.memory_budget_gb=24" in message and "model.gradient_checkpointing=true" in message
    assert "data.batch_size=2" in message
    assert "together these would fit" in budget_message(e, 12, SDXL, big)
    assert "nothing among" in budget_message(e, 1, SDXL, big)
    lycoris = dataclasses.replace(XL_1024, network="lycoris_locon", rank=16)  # 21.3 GB; bypass mode 16.2 GB
    message = budget_message(estimate(SDXL, lycoris), 18, SDXL, lycoris)
    assert "network.bypass_mode=true" in message and "model.gradient_checkpointing=true" in message
    assert "bypass_mode" not in budget_message(e, 24, SDXL, big)  # kohya's LoRA has no such option


def test_budget_names_16_bit_weights_and_cached_text_encoder_outputs():
    """SDXL's frozen weights in float32 are 13.9 GB: bf16 mixed precision halves them. With cached text-encoder
    outputs the text encoders wait in host memory (1.6 GB in bf16) — not an option when they are trained."""
    fp32 = RunShape(bucket=(1024, 1024), rank=32, gradient_checkpointing=True, cache_latents="disk")
    assert "each of these would fit: precision=bf16_mixed" in budget_message(estimate(SDXL, fp32), 12, SDXL, fp32)
    bf16 = dataclasses.replace(XL_1024, gradient_checkpointing=True, cache_latents="disk")  # 9.15 GB
    message = budget_message(estimate(SDXL, bf16), 8, SDXL, bf16)
    assert "data.cache_text_encoder_outputs=true" in message and "precision=" not in message
    trained = dataclasses.replace(bf16, train_text_encoder=True)
    assert "cache_text_encoder_outputs" not in budget_message(estimate(SDXL, trained), 8, SDXL, trained)


def test_dry_run_prints_the_estimate_and_writes_it(tmp_path, caplog):
    from sdlora.run import train

    cfg = compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", "dry_run=true")
    with caplog.at_level("INFO", logger="sdlora"):
        train(cfg, tmp_path)
    assert "Memory estimate (accelerator peak ≈" in caplog.text and "tiny architecture" in caplog.text
    memory = json.loads((tmp_path / "data_plan.json").read_text())["memory"]
    assert memory["peak_gb"] > 0 and memory["bucket"] == [64, 64]


def test_a_budget_below_the_estimate_stops_before_the_model_loads(tmp_path, monkeypatch):
    from sdlora.models.family import ModelFamily
    from sdlora.run import train

    monkeypatch.setattr(ModelFamily, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    cfg = compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt",
                         "trainer.memory_budget_gb=0.001", "trainer.accelerator=cpu")  # fmt: skip
    with pytest.raises(SdloraError, match=r"exceeds trainer.memory_budget_gb=0.001; .*would fit|nothing among"):
        train(cfg, tmp_path)


def test_the_budget_option_is_checked():
    from sdlora.config.checks import check_config

    with pytest.raises(SdloraError, match="trainer.memory_budget_gb must be a positive number"):
        check_config(compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "trainer.memory_budget_gb=-1"))


@pytest.mark.parametrize("network", ["locon", "ia3", "full", "glora", "lokr"])
def test_the_dry_run_estimate_reads_every_network_type(tmp_path, network):
    """The shape takes the type's plain name and a rank for the types without one."""
    from sdlora.run import train

    extra = ["network.conv_rank=4"] if network == "locon" else []
    cfg = compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", "dry_run=true",
                         f"network={network}", *extra)  # fmt: skip
    train(cfg, tmp_path)
    memory = json.loads((tmp_path / "data_plan.json").read_text())["memory"]
    base = tmp_path / "lora"
    train(compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt",
                         "dry_run=true"), base)  # fmt: skip
    plain = json.loads((base / "data_plan.json").read_text())["memory"]
    assert memory["peak_gb"] > 0
    assert not memory["notes"]
    if network in ("locon", "glora"):
        assert memory["lora_parameters"] > plain["lora_parameters"]
    if network == "full":
        assert memory["lora_parameters"] > 10 * plain["lora_parameters"]


def test_cached_parts_wait_in_host_memory_until_sampling():
    """With the latents cached the VAE, with the text-encoder outputs cached the text encoders wait in host memory
    while training (models/host_parts.py); sampling and validation bring them over. SDXL at 1024 px, LoRA rank 32,
    bf16, gradient checkpointing, batch 1 — the configuration of the ≤ 9 GB target in docs/performance.md."""
    latents = RunShape(weight_dtype="bfloat16", autocast=True, rank=32, gradient_checkpointing=True,
                       bucket=(1024, 1024), cache_latents="disk")  # fmt: skip
    both = dataclasses.replace(latents, cache_text=True)
    one, two = estimate(SDXL, latents), estimate(SDXL, both)
    assert one.host == ("VAE",) and two.host == ("VAE", "text encoder(s)")
    assert estimate(SDXL, dataclasses.replace(latents, cache_latents="none")).static - one.static == one.weights["VAE"]
    assert one.static - two.static == two.weights["text encoder(s)"]
    assert two.peak == two.training_peak < 9e9 and "(in host memory while training)" in two.format()
    for visiting in (dataclasses.replace(both, validation=True), dataclasses.replace(both, sample_size=(1024, 1024))):
        visit = estimate(SDXL, visiting)
        assert visit.peak == visit.visiting_peak >= sum(visit.weights.values()) + visit.lora_bytes


def test_budget_says_when_only_sampling_or_validation_does_not_fit():
    """With both caches the training steps of SDXL fit 8.5 GB (7.3 GB); the samples and the validation loss bring the
    VAE and text encoders back (9.6 GB), and the message says so, with what turns them off."""
    shape = RunShape(weight_dtype="bfloat16", autocast=True, rank=32, gradient_checkpointing=True,
                     bucket=(1024, 1024), cache_latents="disk", cache_text=True, sample_size=(1024, 1024),
                     validation=True)  # fmt: skip
    e = estimate(SDXL, shape)
    assert e.training_peak < 8.5 * GB < e.visiting_peak == e.peak
    message = budget_message(e, 8.5, SDXL, shape)
    assert f"the training steps fit ({human(e.training_peak)}), but the sample images" in message
    assert "sample.prompts=null" in message and "validation.split=0" in message
    no_validation = dataclasses.replace(shape, validation=False)
    assert "validation" not in budget_message(estimate(SDXL, no_validation), 8.5, SDXL, no_validation)
