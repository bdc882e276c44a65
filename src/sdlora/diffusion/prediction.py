"""Loss options checked against the model's prediction type — pure config logic, imported by the config checks
before torch is (docs/design.md §7)."""

from __future__ import annotations

from typing import Any

V_PREDICTION = "v_prediction"


def prediction_type_problems(settings: Any, prediction_type: str) -> list[str]:
    """Loss options that contradict the model's prediction type (kohya's guards, plus those that would divide by a
    zero SNR under zero_terminal_snr)."""
    problems = []
    v_prediction = prediction_type == V_PREDICTION
    if settings.v_pred_like_loss and v_prediction:
        problems.append("loss.v_pred_like_loss is for ε-prediction models; the model is v-prediction")
    if settings.scale_v_pred_loss_like_noise_pred and not v_prediction:
        problems.append("loss.scale_v_pred_loss_like_noise_pred needs a v-prediction model (model.v_parameterization)")
    if settings.zero_terminal_snr and not v_prediction:
        divides = [
            name
            for name, on in (
                ("loss.debiased_estimation", settings.debiased_estimation),
                ("loss.v_pred_like_loss", settings.v_pred_like_loss),
            )
            if on
        ]
        if divides:
            problems.append(
                f"loss.zero_terminal_snr with an ε-prediction model makes SNR 0 at the last timestep, where "
                f"{' and '.join(divides)} divide by it: use model.v_parameterization=true or drop one of them"
            )
    return problems
