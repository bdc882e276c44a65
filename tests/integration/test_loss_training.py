"""Every loss option trains on both tiny families; forbidden combinations stop before training with one message."""

from __future__ import annotations

import math

import pytest

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import TINY_MODELS, compose_config, tiny_overrides
from tests.helpers.processes import run_python

OPTION_SETS = {
    "min_snr_debiased": ["loss.min_snr_gamma=5", "loss.debiased_estimation=true"],
    "v_pred_like": ["loss.v_pred_like_loss=0.2"],
    "noise": ["loss.noise_offset=0.05", "loss.adaptive_noise_scale=0.01", "loss.noise_offset_random_strength=true",
              "loss.multires_noise_iterations=3", "loss.ip_noise_gamma=0.1",
              "loss.ip_noise_gamma_random_strength=true"],
    "huber_snr": ["loss.type=huber", "loss.huber_schedule=snr"],
    "smooth_l1_exp": ["loss.type=smooth_l1", "loss.huber_schedule=exponential"],
    "l1_timesteps": ["loss.type=l1", "loss.min_timestep=200", "loss.max_timestep=800"],
    "v_ztsnr": ["model.v_parameterization=true", "loss.zero_terminal_snr=true", "loss.min_snr_gamma=5",
                "loss.debiased_estimation=true"],
    "v_scale": ["model.v_parameterization=true", "loss.scale_v_pred_loss_like_noise_pred=true"],
}  # fmt: skip


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("options", OPTION_SETS)
def test_loss_options_train(model, options, small_dataset, tmp_path):
    extra = OPTION_SETS[options]
    if model == "tiny_sd2_v" and options == "v_pred_like":  # an ε option: the SD 2.x 512 (ε) case
        extra = ["model.v_parameterization=false", *extra]
    summary = train(compose_config(*tiny_overrides(small_dataset, *extra, model=model)), tmp_path / "r")
    assert math.isfinite(summary["loss"]) and summary["steps"] == 4
    _, meta = load_lora(summary["files"][0])
    if options == "noise":
        assert meta["ss_noise_offset"] == "0.05" and meta["ss_multires_noise_iterations"] == "3"
        assert meta["ss_ip_noise_gamma"] == "0.1"
    if options == "v_ztsnr":
        assert meta["ss_zero_terminal_snr"] == "True" and meta["modelspec.prediction_type"] == "v"
    if model == "tiny_sd2_v":
        v_model = options != "v_pred_like"
        assert meta["ss_v2"] == "True" and meta["modelspec.prediction_type"] == ("v" if v_model else "epsilon")
        assert meta["modelspec.architecture"].startswith(
            "stable-diffusion-v2-768-v" if v_model else "stable-diffusion-v2-512"
        )
    if options == "l1_timesteps":
        assert meta["modelspec.timestep_range"] == "200,800" and meta["ss_loss_type"] == "l1"


FORBIDDEN = [
    (["model.v_parameterization=true", "loss.v_pred_like_loss=0.1"], "loss.v_pred_like_loss is for ε-prediction"),
    (["loss.scale_v_pred_loss_like_noise_pred=true"], "loss.scale_v_pred_loss_like_noise_pred needs a v-prediction"),
    (["model.v_parameterization=true", "loss.scale_v_pred_loss_like_noise_pred=true", "loss.zero_terminal_snr=true"],
     "loss.scale_v_pred_loss_like_noise_pred and loss.zero_terminal_snr cannot be combined"),
    (["loss.zero_terminal_snr=true", "loss.debiased_estimation=true"], "loss.debiased_estimation divide"),
    (["loss.adaptive_noise_scale=0.1"], "loss.adaptive_noise_scale needs loss.noise_offset"),
    (["loss.ip_noise_gamma_random_strength=true"], "loss.ip_noise_gamma_random_strength needs loss.ip_noise_gamma"),
    (["loss.huber_c=0"], "loss.huber_c must be in (0, 1]"),
    (["loss.min_snr_gamma=-1"], "loss.min_snr_gamma must be > 0"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "fragment"), FORBIDDEN)
def test_forbidden_combinations_are_reported(overrides, fragment, small_dataset):
    model = next((o.split("=")[1] for o in overrides if o.startswith("model=")), "tiny")
    rest = [o for o in overrides if not o.startswith("model=")]
    with pytest.raises(SdloraError) as info:
        check_config(compose_config(*tiny_overrides(small_dataset, *rest, model=model)))
    assert fragment in str(info.value)


def test_prediction_type_declared_by_a_diffusers_folder_is_checked(small_dataset, tmp_path):
    """A v-prediction diffusers folder (its scheduler config says so) with an ε-only loss option stops at validation."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from sdlora.models.tiny import TinySD15Family

    c = TinySD15Family().load()
    StableDiffusionPipeline(
        c.vae, c.text_encoders[0], c.tokenizers[0], c.unet, DDPMScheduler(prediction_type="v_prediction"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(tmp_path / "pipe")  # fmt: skip
    cfg = compose_config(*tiny_overrides(small_dataset, f"model.pretrained={tmp_path / 'pipe'}",
                                         "loss.v_pred_like_loss=0.1", model="sd15"))  # fmt: skip
    with pytest.raises(SdloraError, match="loss.v_pred_like_loss is for ε-prediction"):
        check_config(cfg)


def test_forbidden_combination_on_the_command_line(small_dataset, tmp_path):
    result = run_python(["train.py", *tiny_overrides(small_dataset, "model.v_parameterization=true",
                         "loss.v_pred_like_loss=0.1"), f"hydra.run.dir={tmp_path}"], timeout=120)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "loss.v_pred_like_loss is for ε-prediction models" in output
    assert not list(tmp_path.glob("*.safetensors"))
