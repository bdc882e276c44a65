"""The fixed timesteps and noise of the validation loss."""

from __future__ import annotations

import torch

from sdlora.diffusion.eval_noise import fixed_noise, validation_timesteps


def test_timesteps_are_spread_over_the_range():
    assert validation_timesteps(0, 1000, 4) == [125, 375, 625, 875]
    assert validation_timesteps(200, 800, 2) == [350, 650]
    assert validation_timesteps(500, 500, 3) == [500, 500, 500]  # a constant training timestep
    assert validation_timesteps(0, 1000, 1) == [500]


def test_noise_depends_only_on_seed_key_and_index():
    a = fixed_noise((4, 8, 8), 0, "/data/1_x/a.png", 0)
    assert torch.equal(a, fixed_noise((4, 8, 8), 0, "/data/1_x/a.png", 0))
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(a, fixed_noise((4, 8, 8), 0, "/data/1_x/a.png", 0))
    for other in (fixed_noise((4, 8, 8), 1, "/data/1_x/a.png", 0), fixed_noise((4, 8, 8), 0, "/data/1_x/b.png", 0),
                  fixed_noise((4, 8, 8), 0, "/data/1_x/a.png", 1)):  # fmt: skip
        assert not torch.equal(a, other)
    assert abs(float(a.mean())) < 0.2 and abs(float(a.std()) - 1) < 0.2
