"""Stochastic rounding of bf16 LoRA updates [``precision.stochastic_rounding``; beyond kohya].

With ``precision=full_bf16`` the LoRA parameters are bfloat16 (8 significant bits). An update smaller than half the
spacing of bf16 numbers around a weight rounds away to nothing: with lr 1e-4, a weight of magnitude 0.05 (spacing
2⁻¹²) never moves, so training stalls unnoticed as the weights grow. kohya's ``--full_bf16`` has this problem.

Stochastic rounding rounds up or down at random, with the probabilities that make the expected result exact, so small
updates accumulate on average. Here the optimizer steps on float32 copies of the parameters and gradients (its state
is therefore float32), and the new values are rounded stochastically back to bfloat16. Between steps, parameters and
gradients are bfloat16.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

_LOW_BITS = 1 << 16  # a float32 holds a bfloat16 in its upper 16 bits
_HIGH_MASK = -_LOW_BITS  # 0xFFFF0000 as a signed int32


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round ``x`` to bfloat16 stochastically, so that E[result] = x.

    A float32 is sign | exponent | 23 mantissa bits and bfloat16 keeps its upper 16 bits. Adding a uniform integer
    u ∈ [0, 2¹⁶) to the float32 bit pattern and clearing the low 16 bits rounds the magnitude up to the next bf16 with
    probability (low 16 bits) / 2¹⁶, and down (truncation) otherwise — unbiased for either sign, because floats are
    sign-magnitude. Values that are already bf16 come back unchanged; ±inf stays ±inf.
    """
    x32 = x.detach().to(torch.float32).contiguous()
    noise = torch.randint(0, _LOW_BITS, x32.shape, dtype=torch.int32, device=x32.device, generator=generator)
    bits = (x32.view(torch.int32) + noise) & _HIGH_MASK
    return bits.view(torch.float32).to(torch.bfloat16)  # exact: the low 16 bits are zero


def _params(optimizer: torch.optim.Optimizer):
    for group in optimizer.param_groups:
        yield from group["params"]


def _set_dtype(param: torch.Tensor, data: torch.Tensor, grad_dtype: torch.dtype) -> None:
    """Replace a parameter's data (and convert its gradient) in place; the optimizer keeps the same object."""
    grad = param.grad
    param.grad = None
    param.data = data
    if grad is not None:
        param.grad = grad.to(grad_dtype)


class StochasticRounding(Callback):
    """Runs each optimizer step of the bf16 LoRA parameters in float32 and rounds the result stochastically.

    ``on_before_optimizer_step`` (after backward and before gradient clipping) upcasts the parameters and gradients;
    an optimizer step post-hook rounds them back. The rounding noise comes from its own seeded generator.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator: torch.Generator | None = None
        self._handles: list = []
        self._upcast: list[torch.nn.Parameter] = []  # parameters running the current step in float32
        self._restored: torch.Tensor | None = None  # the generator state of a resumed training state
        self._optimizer_states: list[dict] | None = None  # a resumed state's (float32) optimizer states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Keep the state's optimizer states: Lightning loads them into the optimizer cast to the parameters' dtype
        (bfloat16 between steps), but this optimizer's state is float32 (it steps on float32 copies)."""
        self._optimizer_states = checkpoint.get("optimizer_states")

    def state_dict(self) -> dict:
        """Kept in training states (Lightning stores callback states), so a resumed run rounds as the full run."""
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state.get("generator")

    def on_train_start(self, trainer, pl_module) -> None:
        self.generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        if self._restored is not None:
            self.generator.set_state(self._restored)
            self._restored = None
        if self._optimizer_states is not None:  # reload them while the parameters are float32: nothing is rounded
            for optimizer, state in zip(trainer.optimizers, self._optimizer_states, strict=True):
                upcast = [p for p in _params(optimizer) if p.dtype == torch.bfloat16]
                for param in upcast:
                    _set_dtype(param, param.data.float(), torch.float32)
                optimizer.load_state_dict(state)
                for param in upcast:
                    _set_dtype(param, param.data.to(torch.bfloat16), torch.bfloat16)
            self._optimizer_states = None
        self._handles = [opt.register_step_post_hook(self._round_back) for opt in trainer.optimizers]

    def on_train_end(self, trainer, pl_module) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for param in _params(optimizer):
            if param.dtype == torch.bfloat16:
                _set_dtype(param, param.data.float(), torch.float32)
                self._upcast.append(param)

    def _round_back(self, optimizer, args, kwargs) -> None:
        for param in self._upcast:
            _set_dtype(param, stochastic_round_to_bf16(param.data, self.generator), torch.bfloat16)
        self._upcast = []
