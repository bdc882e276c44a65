"""Precision: stochastic rounding (the pure function and the optimizer-step hook), the fp16-gradient scaler of
full_fp16, the precision plan per device, and its config checks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sdlora.config.schema import PrecisionConfig
from sdlora.precision.policy import check_precision, resolve_precision, trainer_kwargs, vae_dtype
from sdlora.precision.rounding import StochasticRounding, stochastic_round_to_bf16
from sdlora.precision.scaler import FP16ParamsGradScaler
from tests.helpers.config import CONF_DIR


def _node(option: str, **changes):
    return OmegaConf.merge(OmegaConf.load(CONF_DIR / "precision" / f"{option}.yaml"), changes)


# --- stochastic rounding: the pure function ---------------------------------------------------------------------------


def _neighbours(x: float) -> tuple[float, float]:
    """The two bf16 numbers around x (round toward zero, and the next one away from zero)."""
    bits = torch.tensor([x], dtype=torch.float32).view(torch.int32)
    low = (bits & -65536).view(torch.float32).item()
    high = ((bits & -65536) + 65536).view(torch.float32).item()
    return low, high


@pytest.mark.parametrize("x", [1.0 + 2**-10, -(1.0 + 3 * 2**-10), 0.0123, 3.0e-5, -7.77])
def test_stochastic_rounding_is_unbiased_between_the_two_neighbours(x):
    generator = torch.Generator().manual_seed(0)
    samples = stochastic_round_to_bf16(torch.full((200_000,), x), generator).float()
    low, high = _neighbours(x)
    assert set(samples.unique().tolist()) <= {low, high}
    p_high = (x - low) / (high - low)  # probability of the neighbour away from zero
    assert (samples == high).float().mean().item() == pytest.approx(p_high, abs=0.005)
    assert samples.double().mean().item() == pytest.approx(x, rel=2e-4)  # E[round(x)] = x


def test_stochastic_rounding_keeps_bf16_values_and_infinities():
    exact = torch.tensor([0.0, 1.0, -2.5, 0.15625, float("inf"), -float("inf")])
    assert torch.equal(stochastic_round_to_bf16(exact), exact.to(torch.bfloat16))
    assert stochastic_round_to_bf16(torch.zeros(3, 4)).dtype == torch.bfloat16
    assert stochastic_round_to_bf16(torch.zeros(3, 4)).shape == (3, 4)


def test_round_to_nearest_loses_small_updates_and_stochastic_rounding_keeps_them():
    """Why the option exists: 1000 updates of +1e-4 to a bf16 weight of 1.0 (spacing 2⁻⁷)."""
    nearest = torch.ones(1, dtype=torch.bfloat16)
    for _ in range(1000):
        nearest = (nearest.float() + 1e-4).to(torch.bfloat16)
    assert nearest.item() == 1.0  # every update rounded away
    generator = torch.Generator().manual_seed(0)
    stochastic = torch.ones(256, dtype=torch.bfloat16)  # 256 independent weights
    for _ in range(1000):
        stochastic = stochastic_round_to_bf16(stochastic.float() + 1e-4, generator)
    assert stochastic.float().mean().item() == pytest.approx(1.1, abs=0.01)


# --- stochastic rounding: the optimizer-step hook ---------------------------------------------------------------------


class _Stub:
    """Stand-ins for Lightning's trainer and module: the callback reads only these attributes."""

    def __init__(self, optimizers):
        self.optimizers = optimizers
        self.device = torch.device("cpu")


def test_stochastic_rounding_callback_steps_in_float32_and_rounds_back():
    param = torch.nn.Parameter(torch.ones(64, 64, dtype=torch.bfloat16))
    optimizer = torch.optim.SGD([param], lr=1e-4)
    callback = StochasticRounding(seed=0)
    stub = _Stub([optimizer])
    callback.on_train_start(stub, stub)
    for _ in range(50):
        param.grad = torch.ones_like(param)  # bf16 gradient, as backward leaves it
        callback.on_before_optimizer_step(stub, stub, optimizer)
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32  # the step sees float32
        optimizer.step()
        assert param.dtype == torch.bfloat16 and param.grad.dtype == torch.bfloat16  # rounded back
    # plain bf16 SGD would leave every weight at 1.0; the expected value after 50 steps is 1 − 50·1e-4
    assert param.float().mean().item() == pytest.approx(1 - 50e-4, abs=3e-4)
    callback.on_train_end(stub, stub)
    assert not callback._handles


def test_stochastic_rounding_callback_keeps_optimizer_state_in_float32():
    param = torch.nn.Parameter(torch.randn(8, 8).to(torch.bfloat16))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    callback = StochasticRounding(seed=1)
    stub = _Stub([optimizer])
    callback.on_train_start(stub, stub)
    param.grad = torch.randn(8, 8).to(torch.bfloat16)
    callback.on_before_optimizer_step(stub, stub, optimizer)
    optimizer.step()
    state = optimizer.state[param]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    assert param.dtype == torch.bfloat16


def test_stochastic_rounding_leaves_float32_parameters_alone():
    param = torch.nn.Parameter(torch.full((4,), 1.0 + 2**-12))  # not representable in bf16
    optimizer = torch.optim.SGD([param], lr=0.0)
    callback = StochasticRounding()
    stub = _Stub([optimizer])
    callback.on_train_start(stub, stub)
    param.grad = torch.zeros_like(param)
    callback.on_before_optimizer_step(stub, stub, optimizer)
    optimizer.step()
    assert param.dtype == torch.float32 and torch.all(param == 1.0 + 2**-12)


# --- full_fp16 gradient scaler ----------------------------------------------------------------------------------------


def _scaled_backward(scaler):
    param = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler.scale((param.float() * 2).sum()).backward()
    return param, optimizer


def test_plain_grad_scaler_refuses_fp16_gradients():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _, optimizer = _scaled_backward(scaler)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        scaler.unscale_(optimizer)


def test_fp16_params_grad_scaler_unscales_and_steps():
    scaler = FP16ParamsGradScaler("cpu", init_scale=1024.0)
    param, optimizer = _scaled_backward(scaler)
    assert torch.all(param.grad == 2048.0)  # scaled: 2 · 1024
    scaler.unscale_(optimizer)
    assert torch.all(param.grad == 2.0) and param.grad.dtype == torch.float16
    scaler.step(optimizer)
    scaler.update()
    assert torch.allclose(param.float(), torch.full((4,), 0.8), atol=1e-3)


def test_fp16_params_grad_scaler_skips_overflowing_steps():
    scaler = FP16ParamsGradScaler("cpu", init_scale=2.0**15)
    param = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler.scale((param.float() * 1e4).sum()).backward()  # 1e4 · 2¹⁵ overflows fp16
    scaler.step(optimizer)
    scaler.update()
    assert torch.all(param == 1.0)  # step skipped
    assert scaler.get_scale() == 2.0**14  # scale halved


# --- the precision plan -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "device", "expected"),
    [
        ("fp32", "cpu", ("fp32", "32-true", "float32", "float32", "no")),
        ("bf16_mixed", "cpu", ("bf16_mixed", "bf16-mixed", "bfloat16", "float32", "bf16")),
        ("fp16_mixed", "cuda", ("fp16_mixed", "16-mixed", "float16", "float32", "fp16")),
        ("fp16_mixed", "cpu", ("bf16_mixed", "bf16-mixed", "bfloat16", "float32", "bf16")),
        ("full_bf16", "cpu", ("full_bf16", "bf16-mixed", "bfloat16", "bfloat16", "bf16")),
        ("full_fp16", "cuda", ("full_fp16", "16-mixed", "float16", "float16", "fp16")),
        ("full_fp16", "cpu", ("full_bf16", "bf16-mixed", "bfloat16", "bfloat16", "bf16")),
    ],
)
def test_resolve_precision(option, device, expected):
    values, notes = resolve_precision(_node(option), device, vae_needs_fp32=False)
    got = tuple(values[k] for k in ("name", "trainer_precision", "weight_dtype", "lora_dtype", "mixed_precision"))
    assert got == expected
    assert bool(notes) == ("fp16" in option and device == "cpu")  # a warning names the fallback
    assert values["no_half_vae"] is False  # the family's need decides when the option is null


def _resolved(option: str, device: str, vae_needs_fp32: bool = False, **changes) -> PrecisionConfig:
    values, _ = resolve_precision(_node(option, **changes), device, vae_needs_fp32)
    return PrecisionConfig(**{**OmegaConf.to_container(_node(option, **changes)), **values})


def test_no_half_vae():
    assert vae_dtype(_resolved("bf16_mixed", "cpu", no_half_vae=True)) == "float32"
    assert vae_dtype(_resolved("bf16_mixed", "cpu", no_half_vae=False)) == "bfloat16"
    assert vae_dtype(_resolved("bf16_mixed", "cpu", vae_needs_fp32=True)) == "float32"  # SDXL's VAE
    assert vae_dtype(_resolved("bf16_mixed", "cpu")) == "bfloat16"


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
def test_trainer_kwargs():
    assert trainer_kwargs(_resolved("bf16_mixed", "cpu"), "cpu") == {"precision": "bf16-mixed"}
    (plugin,) = trainer_kwargs(_resolved("full_fp16", "cuda"), "cuda")["plugins"]
    assert isinstance(plugin.scaler, FP16ParamsGradScaler) and plugin.precision == "16-mixed"
    assert trainer_kwargs(_resolved("fp16_mixed", "cuda"), "cuda") == {"precision": "16-mixed"}


@pytest.mark.parametrize("option", ["fp32", "bf16_mixed", "fp16_mixed", "full_bf16", "full_fp16"])
def test_shipped_precision_options_are_valid(option):
    assert check_precision(_node(option)) == []
    assert check_precision(_node("full_bf16", stochastic_rounding=True)) == []


@pytest.mark.parametrize(
    ("option", "changes", "message"),
    [
        ("fp32", {"stochastic_rounding": True}, "use it with precision=full_bf16"),
        ("full_fp16", {"stochastic_rounding": True}, "use it with precision=full_bf16"),
        ("fp32", {"lora_dtype": "bfloat16"}, "precision.lora_dtype=bfloat16 needs precision.trainer_precision=bf16"),
        ("bf16_mixed", {"lora_dtype": "float16"}, "kohya: full_fp16 requires mixed precision fp16"),
        ("fp32", {"weight_dtype": "float16"}, "must be float32 or the autocast dtype"),
        ("fp32", {"trainer_precision": "bf16-true"}, "precision.trainer_precision='bf16-true' must be one of"),
        ("fp32", {"lora_dtype": "half"}, "precision.lora_dtype='half' must be one of"),
    ],
)
def test_check_precision_problems(option, changes, message):
    problems = check_precision(_node(option, **changes))
    assert len(problems) == 1 and message in problems[0]
