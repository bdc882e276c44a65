"""ΔW norms of LyCORIS modules from file tensors (sdlora.tools.lycoris_numbers), against the products written out."""

from __future__ import annotations

import pytest
import torch

from sdlora.tools.lycoris_numbers import lycoris_numbers


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_loha_is_the_hadamard_product_times_alpha_over_rank():
    w1a, w1b, w2a, w2b = _randn(6, 3), _randn(3, 5), _randn(6, 3), _randn(3, 5)
    numbers = lycoris_numbers({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                               "alpha": torch.tensor(1.5)})  # fmt: skip
    assert (numbers.rank, numbers.alpha) == (3, 1.5)
    assert numbers.delta_norm == pytest.approx(float(((w1a @ w1b) * (w2a @ w2b)).norm() * 1.5 / 3), rel=1e-6)


@pytest.mark.parametrize("decomposed", [False, True])
def test_lokr_is_the_kronecker_product_with_its_scale(decomposed):
    w1, w2a, w2b = _randn(2, 4), _randn(3, 2), _randn(2, 7)
    tensors = {"lokr_w1": w1, "alpha": torch.tensor(1.0)}
    tensors |= {"lokr_w2_a": w2a, "lokr_w2_b": w2b} if decomposed else {"lokr_w2": w2a @ w2b}
    numbers = lycoris_numbers(tensors)
    scale = 1.0 / 2 if decomposed else 1.0  # both factors full: LyCORIS ignores alpha
    assert numbers.rank == (2 if decomposed else None)
    assert numbers.delta_norm == pytest.approx(float(torch.kron(w1, w2a @ w2b).norm()) * scale, rel=1e-6)


def test_full_and_what_the_file_alone_does_not_decide():
    assert lycoris_numbers({"diff": torch.ones(2, 2), "diff_b": torch.ones(2)}).delta_norm == pytest.approx(2.0)
    assert lycoris_numbers({"weight": torch.ones(4), "on_input": torch.tensor(False)}) is None  # (IA)³
    loha_tucker = {"hada_w1_a": torch.ones(1), "hada_t1": torch.ones(1)}
    assert lycoris_numbers(loha_tucker) is None
    assert lycoris_numbers({"lokr_w1": torch.ones(1), "dora_scale": torch.ones(1)}) is None
