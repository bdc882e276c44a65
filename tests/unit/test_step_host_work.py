"""Per-step host work (docs/performance.md "Per-step host work"): the loss is read once per optimizer step, before
the weights change; scalars are handed to Lightning only on the steps its logger writes; torch optimizers run their
multi-tensor kernels; the running mean costs O(1) per step."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from sdlora.errors import NonFiniteLoss
from sdlora.lit.module import PendingLoss
from sdlora.lit.running_mean import RunningMean
from sdlora.optim.factory import fused_allowed, instantiate_partial, with_fast_kernels


def _groups():
    return [{"params": [torch.nn.Parameter(torch.zeros(3, 3))], "lr": 1e-3, "name": "unet"}]


def test_torch_optimizers_get_their_fused_kernel_where_allowed():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.01})
    optimizer = with_fast_kernels(instantiate_partial(node), node, True)(_groups())
    assert optimizer.defaults["fused"] is True and optimizer.param_groups[0]["name"] == "unet"
    factory = instantiate_partial(node)
    assert with_fast_kernels(factory, node, False) is factory  # torch's own default: foreach on CUDA, a loop on CPU


def test_an_explicit_choice_and_other_classes_are_left_alone():
    chosen = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3, "foreach": False})
    assert with_fast_kernels(instantiate_partial(chosen), chosen, True)(_groups()).defaults["foreach"] is False
    other = OmegaConf.create({"_target_": "torch.optim.RAdam", "lr": 1e-3})
    factory = instantiate_partial(other)
    assert with_fast_kernels(factory, other, True) is factory


def test_the_default_is_built_when_the_kernel_is_refused():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3})
    calls = []

    def factory(groups, **kernel):
        calls.append(kernel)
        if kernel:
            raise RuntimeError("fused kernel not supported for these parameters")
        return torch.optim.AdamW(groups, lr=1e-3)

    optimizer = with_fast_kernels(factory, node, True)(_groups())
    assert calls == [{"fused": True}, {}] and not optimizer.defaults["fused"]


@pytest.mark.parametrize(
    ("precision", "lora", "clips", "fsdp", "allowed"),
    [("32-true", "float32", True, False, True), ("bf16-mixed", "float32", True, False, False),
     ("bf16-mixed", "float32", False, False, True), ("16-mixed", "float16", False, False, False),
     ("32-true", "float32", False, True, False)],
)  # fmt: skip
def test_fused_only_where_lightning_can_clip_and_scale(precision, lora, clips, fsdp, allowed):
    assert fused_allowed(precision, lora, clips, fsdp) is allowed


def test_running_mean_is_exact_over_many_windows():
    values = [math.sin(i) * 10 for i in range(1000)]
    mean = RunningMean(7)
    for i, value in enumerate(values):
        got = mean.update(value)
        window = values[max(0, i - 6) : i + 1]
        assert got == pytest.approx(sum(window) / len(window), abs=1e-12)


def _module():
    from sdlora.config.schema import NetworkConfig
    from sdlora.diffusion.objective import DiffusionObjective
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network

    family = TinySD15Family()
    components = family.load()
    network = build_network(family, components, NetworkConfig(rank=2, train_text_encoder=False))
    return LoRATrainingModule(
        family, components, network, optimizer=None, scheduler=None, learning_rates={"default": 1e-4},
        total_steps=4, batches_per_epoch=4, objective=DiffusionObjective(components.prediction_type),
    )  # fmt: skip


def test_losses_wait_for_the_optimizer_step_and_stop_it_when_not_finite():
    module = _module()
    nan = torch.tensor(float("nan"))
    module.pending_losses = [PendingLoss.copy(torch.tensor(0.5), torch.tensor(0.5), ["a.png"]),
                             PendingLoss.copy(nan, nan, ["b.png"])]  # fmt: skip
    with pytest.raises(NonFiniteLoss, match=r"the loss became nan in step 1 .*b\.png"):
        module.settle_losses()
    assert module.epoch_losses == [0.5] and module.pending_losses == []  # the finite one before it is kept


def test_another_processs_non_finite_loss_is_named_as_such():
    module = _module()
    module.pending_losses = [PendingLoss.copy(torch.tensor(0.5), torch.tensor(float("inf")), ["mine.png"])]
    with pytest.raises(NonFiniteLoss, match="another process's images"):
        module.settle_losses()
