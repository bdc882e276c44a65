"""kohya's ``--sample_sampler`` names → diffusers schedulers, configured with the training noise schedule.

Every family trains on the same DDPM schedule (:mod:`sdlora.diffusion.schedule`: scaled-linear β from 0.00085 to
0.012 over 1000 steps), so the samplers are built from that schedule and the model's prediction type (ε or v), with
SD's usual ``steps_offset=1`` and "leading" timestep spacing. With ``loss.zero_terminal_snr`` the schedule is rescaled
to a zero terminal SNR and spaced "trailing" (Lin et al. 2023), where the scheduler supports it.

Unlike kohya, DDIM does not clip its x₀ prediction to [−1, 1] (kohya forces ``clip_sample=True``, which is meant for
pixel-space models and cuts off latents).
"""

from __future__ import annotations

from typing import Any

from sdlora.diffusion.schedule import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS

#: sampler name → (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {"lower_order_final": True}),
}
ALIASES = {"k_lms": "lms", "k_euler": "euler", "k_euler_a": "euler_a", "k_dpm_2": "dpm_2", "k_dpm_2_a": "dpm_2_a"}
ZERO_SNR_SCHEDULERS = {"DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                       "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler"}  # fmt: skip


def canonical(name: str) -> str | None:
    """The sampler's canonical name (kohya's ``k_*`` aliases resolved, case-insensitive), or None if unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in SAMPLERS else None


def known_samplers() -> str:
    return ", ".join([*SAMPLERS, *ALIASES])


#: The web UIs' names (A1111's labels, ComfyUI's ids) of samplers kohya has under another name — for a hint only:
#: the config keeps kohya's names.
WEB_UI_NAMES = {
    "dpmpp_2m": "dpmsolver++", "dpm++ 2m": "dpmsolver++", "euler_ancestral": "euler_a", "euler a": "euler_a",
    "dpm2": "dpm_2", "dpm2_ancestral": "dpm_2_a", "dpm2 a": "dpm_2_a", "lms karras": "lms",
}  # fmt: skip


def unknown_sampler_message(name: str, where: str) -> str:
    """``<where>{name!r} is not a sampler …`` with the kohya name of a web UI's sampler name, and the known names."""
    meant = WEB_UI_NAMES.get(name.strip().lower())
    hint = f" — the web UIs' {name} is {meant} here" if meant else ""
    return f"{where}{name!r} is not a sampler{hint} (known: {known_samplers()})"


def scheduler_config(name: str, prediction_type: str, zero_terminal_snr: bool = False) -> tuple[str, dict[str, Any]]:
    """(scheduler class name, config) of sampler ``name`` for a model trained with ``prediction_type``."""
    key = canonical(name)
    if key is None:
        raise ValueError(f"unknown sampler {name!r} (known: {known_samplers()})")
    class_name, extra = SAMPLERS[key]
    config = {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        **extra,
    }
    if zero_terminal_snr and class_name in ZERO_SNR_SCHEDULERS:
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return class_name, config


def build_sampler(name: str, prediction_type: str, zero_terminal_snr: bool = False):
    """The diffusers scheduler of sampler ``name`` (see :func:`scheduler_config`)."""
    import warnings

    import diffusers

    class_name, config = scheduler_config(name, prediction_type, zero_terminal_snr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates algorithm_type=dpmsolver (kohya's)
        return getattr(diffusers, class_name).from_config(config)
