"""EMA of the LoRA: decay schedules, float32 shadow weights and post-hoc EMA (Karras et al. 2024) — the synthetic
trajectory test: the EMA reconstructed from snapshots of two power-function EMAs matches a directly tracked EMA of
another length within 1e-3 relative error."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from sdlora.callbacks.eval_weights import evaluation_weights
from sdlora.ema.decay import ema_decay, gamma_for, power_beta, sigma_rel
from sdlora.ema.posthoc import combine, fit, profile_weights
from sdlora.ema.weights import ShadowWeights


def test_constant_and_warmup_decay():
    assert ema_decay(1, 0.999) == ema_decay(500, 0.999) == 0.999
    # diffusers' EMAModel(use_ema_warmup=True): step = updates − 1, 1 − (1 + step/inv_gamma)^−power, capped at decay
    for n in (1, 2, 10, 1000, 10**6):
        expected = min(0.9999, 1 - (1 + (n - 1) / 1.0) ** -0.75)
        assert ema_decay(n, 0.9999, power=0.75) == pytest.approx(expected)
    assert ema_decay(1, 0.9999, power=0.75) == 0.0  # the first update copies the weights
    with pytest.raises(ValueError):
        ema_decay(0, 0.9)


def test_power_function_profile():
    assert power_beta(1, 6.9) == 0.0 and power_beta(2, 0.0) == 0.5
    for sigma in (0.05, 0.07, 0.10, 0.2):
        assert sigma_rel(gamma_for(sigma)) == pytest.approx(sigma, rel=1e-9)
    assert gamma_for(0.05) == pytest.approx(16.97, abs=0.01) and gamma_for(0.10) == pytest.approx(6.94, abs=0.01)
    with pytest.raises(ValueError):
        gamma_for(0.3)
    # the discrete weights of a tracked power EMA are exactly profile_weights
    gamma, steps = gamma_for(0.1), 50
    trajectory = np.random.default_rng(0).normal(size=(steps, 3))
    ema = np.zeros(3)
    for n in range(1, steps + 1):
        beta = power_beta(n, gamma)
        ema = beta * ema + (1 - beta) * trajectory[n - 1]
    weights = profile_weights(steps, gamma, np.arange(1, steps + 1))
    assert weights.sum() == pytest.approx(1.0) and np.allclose(weights @ trajectory, ema, atol=1e-12)


def test_posthoc_reconstruction_matches_a_tracked_ema():
    """A synthetic parameter trajectory (drift + oscillation + noise); two power EMAs (σ_rel 0.05, 0.10) snapshotted
    every 25 of 1000 updates; the EMA with σ_rel 0.07 solved from them matches the one tracked directly."""
    rng = np.random.default_rng(0)
    steps, every, width = 1000, 25, 64
    t = np.arange(1, steps + 1)[:, None]
    drift = np.cumsum(rng.normal(size=(steps, width)) * 0.05, axis=0)
    trajectory = drift + np.sin(t / 60.0 * (1 + np.arange(width) / width)) + 0.3 * rng.normal(size=(steps, width))
    gammas, target = [gamma_for(0.05), gamma_for(0.10)], gamma_for(0.07)
    tracked = [np.zeros(width) for _ in range(3)]
    snapshots, values = [], []
    for n in range(1, steps + 1):
        for i, gamma in enumerate([*gammas, target]):
            beta = power_beta(n, gamma)
            tracked[i] = beta * tracked[i] + (1 - beta) * trajectory[n - 1]
        if n % every == 0:
            for i, gamma in enumerate(gammas):
                snapshots.append((n, gamma))
                values.append({"w": torch.from_numpy(tracked[i].copy())})
    solution = fit(snapshots, steps, target)
    reconstructed = combine((x, values[i]) for x, i in zip(solution.coefficients, solution.used, strict=True))["w"]
    direct = torch.from_numpy(tracked[2])
    error = float((reconstructed.double() - direct).norm() / direct.norm())
    assert error < 1e-3, error
    assert solution.relative_error < 0.01
    # at an earlier snapshot only the snapshots up to it are used
    assert max(snapshots[i][0] for i in fit(snapshots, 500, target).used) == 500


def test_combine_keeps_constant_tensors():
    a = {"x.lora_down.weight": torch.ones(2, 2), "x.alpha": torch.tensor(4.0)}
    b = {"x.lora_down.weight": torch.full((2, 2), 3.0), "x.alpha": torch.tensor(4.0)}
    out = combine([(0.7, a), (0.2, b)])
    assert torch.equal(out["x.alpha"], torch.tensor(4.0))  # not 0.9 × alpha
    assert torch.allclose(out["x.lora_down.weight"], torch.full((2, 2), 0.7 + 0.6))


def test_shadow_weights_update_swap_and_state():
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16)), torch.nn.Parameter(torch.zeros(2))]
    ema = ShadowWeights(params)
    assert all(s.dtype == torch.float32 for s in ema.shadow)
    with torch.no_grad():
        params[0].fill_(3.0)
        params[1].fill_(1.0)
    ema.update(params, 0.75)
    assert torch.allclose(ema.shadow[0], torch.full((3,), 1.5)) and torch.allclose(
        ema.shadow[1], torch.full((2,), 0.25)
    )
    trained = [p.detach().clone() for p in params]
    with ema.swapped(params):
        assert torch.equal(params[1], torch.full((2,), 0.25))
    assert all(torch.equal(p, t) for p, t in zip(params, trained, strict=True))  # bit for bit
    other = ShadowWeights(params)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow, strict=True))
    ema.update(params, 0.0)
    assert torch.equal(ema.shadow[1], params[1].float())


def test_evaluation_weights_use_the_callbacks_swap():
    param = torch.nn.Parameter(torch.zeros(2))

    class Swapper:
        def evaluation_swap(self, module):
            @contextlib.contextmanager
            def swap():
                with torch.no_grad():
                    param.fill_(7.0)
                yield
                with torch.no_grad():
                    param.fill_(0.0)

            return swap()

    class Trainer:
        def __init__(self) -> None:
            self.optimizers = [torch.optim.SGD([param], lr=0.1)]
            self.callbacks = [Swapper()]

    with evaluation_weights(Trainer(), None):
        assert torch.equal(param, torch.full((2,), 7.0))
    assert torch.equal(param, torch.zeros(2))


def test_exact_weights_keep_float32_for_files():
    """exact(): the float32 shadows themselves inside a bf16 parameter (for files), which swapped() rounds; the bf16
    tensor (same storage, dtype and values) afterwards."""
    params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16)), torch.nn.Parameter(torch.zeros(2))]
    ema = ShadowWeights(params)
    ema.shadow[0].fill_(1 / 3)
    ema.shadow[1].fill_(0.25)
    storage = params[0].data_ptr()
    with ema.swapped(params):
        assert params[0].dtype == torch.bfloat16 and params[0][0].item() != 1 / 3
    with ema.exact(params):
        assert params[0].dtype == torch.float32 and torch.equal(params[0].detach(), ema.shadow[0])
        assert torch.equal(params[1].detach(), ema.shadow[1])
    assert params[0].data_ptr() == storage and params[0].dtype == torch.bfloat16 and not params[0].any()
    assert torch.equal(params[1].detach(), torch.zeros(2))


@pytest.mark.parametrize("case", ["lora", "dylora", "lycoris_locon_tucker", "dora_on_input", "loha", "lokr_both",
                                  "ia3", "lycoris_dylora", "boft_rescaled", "glora", "full"])  # fmt: skip
def test_exact_weights_give_the_file_tensors_of_every_type(case):
    """A bf16 module of each kind of file tensors (factors, products with a scalar, concatenated rows, differences from
    the base weight): under exact() its file tensors are computed from the float32 EMA, close to the bf16 ones and
    float32 where they carry trained values; the module is the same afterwards."""
    from tests.unit.test_network_types import trained

    _, module, _ = trained(case, "conv3x3")
    module.to(torch.bfloat16)
    params = [p for p in module.parameters() if p.requires_grad]
    before = {k: v.detach().clone() for k, v in module.file_tensors().items()}
    ema = ShadowWeights(params)
    for shadow in ema.shadow:
        shadow.add_(1e-3 * torch.randn(shadow.shape, generator=torch.Generator().manual_seed(1)))
    with ema.exact(params):
        exact = {k: v.detach().clone() for k, v in module.file_tensors().items()}
    with ema.swapped(params):
        rounded = {k: v.detach().clone() for k, v in module.file_tensors().items()}
    assert any(v.dtype == torch.float32 and not torch.equal(v, rounded[k].float()) for k, v in exact.items())
    assert all(torch.allclose(v.float(), rounded[k].float(), rtol=2**-7, atol=1e-6) for k, v in exact.items())
    after = module.file_tensors()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
