"""Parts of ``trainer=fsdp`` that need no second process: the gradient averaging of the replicated LoRA, the wrap
rule, the config group and strategy object, clipping, what stays unsharded, and the float16 eps warning. Two real
processes: tests/integration/test_fsdp.py; CUDA: tests/gpu/test_cuda_fsdp.py."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from sdlora.distributed.fsdp import LoRAFSDPPrecision, LoRAFSDPStrategy, average_gradients, is_wrapped_block
from sdlora.distributed.world import make_strategy, uses_fsdp
from sdlora.optim.rules import float16_eps_notes
from tests.helpers.config import EXAMPLE_DATA, compose_config, resolved


def _params(*grads: float | None) -> list[nn.Parameter]:
    params = [nn.Parameter(torch.zeros(shape)) for shape in [(2, 3), (4,), (1,)]]
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else torch.full(p.shape, float(g))
    return params


def _buffer_of(params: list[nn.Parameter]) -> torch.Tensor:
    """What this process contributes to the all-reduce."""
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    for c, p in zip(copies, params, strict=True):
        c.grad = None if p.grad is None else p.grad.clone()
    captured = []
    average_gradients(copies, 2, lambda buffer: captured.append(buffer.clone()))
    return captured[0]


def test_replicated_gradients_are_averaged_over_the_processes():
    rank0, rank1 = _params(1.0, None, None), _params(3.0, 2.0, None)
    other = _buffer_of(rank1)
    average_gradients(rank0, 2, lambda buffer: buffer.add_(other))  # all_reduce(SUM) of the two processes
    assert torch.equal(rank0[0].grad, torch.full((2, 3), 2.0))
    assert torch.equal(rank0[1].grad, torch.full((4,), 1.0))  # no gradient here, one on the other process
    assert rank0[2].grad is None  # no process has one: stays None, as under DDP


def test_frozen_parameters_take_no_part():
    frozen = nn.Parameter(torch.ones(3), requires_grad=False)
    calls = []
    average_gradients([frozen], 2, calls.append)
    assert calls == []


def test_blocks_become_fsdp_units_by_class_name():
    from diffusers.models.attention import BasicTransformerBlock

    block = BasicTransformerBlock(8, 1, 8)
    assert is_wrapped_block(block) and not is_wrapped_block(nn.Linear(2, 2))
    assert not is_wrapped_block(block, frozenset({"ResnetBlock2D"}))


def test_trainer_fsdp_composes_to_the_lora_fsdp_strategy():
    cfg = compose_config("model=tiny", "trainer=fsdp", "trainer.fsdp.sharding_strategy=SHARD_GRAD_OP")
    assert uses_fsdp(cfg.trainer) and cfg.trainer.devices == "auto"
    strategy = make_strategy(cfg.trainer)
    assert isinstance(strategy, LoRAFSDPStrategy)
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP"
    assert strategy.kwargs["use_orig_params"] is True
    assert make_strategy(compose_config("model=tiny", "trainer=ddp").trainer) == "ddp_find_unused_parameters_true"


def test_a_misspelt_sharding_strategy_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="sharding_strategy"):
        compose_config("model=tiny", "trainer=fsdp", "trainer.fsdp.sharding_strategy=FULL")


def test_lora_gradients_are_clipped_by_their_norm():
    params = _params(3.0, 4.0, 0.0)
    optimizer = torch.optim.SGD(params, lr=0.1)
    LoRAFSDPPrecision("32-true").clip_grad_by_norm(optimizer, 1.0)
    norm = torch.cat([p.grad.flatten() for p in params]).norm()
    assert norm == pytest.approx(1.0, rel=1e-5)


def test_the_lora_branches_and_the_vae_stay_unsharded(tmp_path):
    from sdlora.assemble import assemble
    from sdlora.builders import make_module
    from sdlora.network.build import build_network

    run = assemble(resolved("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt"), tmp_path)
    components = run.family.load()
    network = build_network(run.family, components, run.config.network)
    module = make_module(run, components, network)
    unsharded = module.unsharded_modules()
    assert unsharded[-1] is components.vae
    trained = {id(p) for m in unsharded for p in m.parameters() if p.requires_grad}
    assert trained == {id(p) for p in network.trainable_parameters()}


@pytest.mark.parametrize(
    ("target", "eps", "dtype", "warned"),
    [
        ("torch.optim.AdamW", 1e-8, "float16", True),
        ("torch.optim.AdamW", 1e-4, "float16", False),
        ("torch.optim.AdamW", 1e-8, "bfloat16", False),
        ("bitsandbytes.optim.AdamW8bit", 1e-8, "float16", False),
    ],
)
def test_an_eps_that_is_zero_in_float16_is_warned_about(target, eps, dtype, warned):
    from omegaconf import OmegaConf

    node = OmegaConf.create({"_target_": target, "_partial_": True, "eps": eps})
    notes = float16_eps_notes(node, target, dtype)
    assert bool(notes) is warned
    if warned:
        assert "optimizer.eps=1e-08 is 0 in float16" in notes[0] and "optimizer=adamw8bit" in notes[0]
