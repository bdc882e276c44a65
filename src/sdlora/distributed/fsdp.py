"""``trainer=fsdp``: Lightning's FSDP strategy, sharding the frozen base model and keeping the LoRA whole.

A LoRA run trains a few million parameters on top of a frozen model of up to 2.6 B (SDXL). What does not fit one GPU
is the frozen model, so that is what FSDP shards here: every U-Net transformer and ResNet block and every CLIP encoder
layer is its own FSDP unit (gathered for its forward, freed after it), the rest of the U-Net and text encoders is the
root unit. The LoRA branches (``lora_down``/``lora_up``) and the VAE stay out of FSDP (``ignored_states``):

- every process holds the whole LoRA, as under DDP, so the LoRA saver, max-norm regularisation, training states and
  sample images work on it unchanged, and gradient clipping is plain ``clip_grad_norm_``;
- the LoRA gradients are averaged over the processes once per optimizer step (after the last accumulated micro-batch,
  before clipping), in one flat all-reduce (:func:`average_gradients`);
- FSDP needs one dtype per unit, and the LoRA (float32 under mixed precision) and the VAE (float32 for SDXL) differ
  from the frozen model's dtype; the VAE is also called through ``encode``/``decode``, which FSDP does not hook.

FSDP does not cast anything (``MixedPrecision()`` without dtypes): the ``precision`` group already chose each part's
dtype (:mod:`sdlora.precision.policy`), and Lightning's autocast runs the mixed-precision step, as with DDP.
Code that calls the model outside a training or validation step (sample images) runs on every process inside the
root unit's forward (:meth:`LoRAFSDPStrategy.run_in_model`); only global rank 0 writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, Precision
from torch import nn

from sdlora.config.schema import FSDP_WRAPPED_BLOCKS
from sdlora.lightning_compat import FSDPModelSetup, optimizer_to_device

log = logging.getLogger("sdlora")

WRAPPED_BLOCKS = frozenset(FSDP_WRAPPED_BLOCKS)  # matched by class name (sdlora.config.schema)


def is_wrapped_block(module: nn.Module, names: frozenset[str] = WRAPPED_BLOCKS) -> bool:
    """The auto-wrap rule: a module becomes its own FSDP unit when its class is one of ``names``."""
    return type(module).__name__ in names


def average_gradients(params: Iterable[torch.Tensor], world_size: int, all_reduce: Callable[[torch.Tensor], Any]):
    """Average the gradients of replicated parameters over ``world_size`` processes in one flat all-reduce.

    ``g ← (Σ_ranks g_rank) / world_size``; a parameter without a gradient counts as zeros, and keeps ``grad=None``
    only when no process has a gradient for it (as DDP leaves a parameter no process used). ``all_reduce`` sums a
    tensor in place over the processes (``torch.distributed.all_reduce``).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    buffer = torch.cat([flat, present])
    all_reduce(buffer)
    offset = 0
    for index, p in enumerate(params):
        value = buffer[offset : offset + p.numel()].view_as(p).div_(world_size)
        offset += p.numel()
        if buffer[flat.numel() + index] == 0:
            continue  # no process has a gradient for it
        if p.grad is None:
            p.grad = value.to(p.dtype)
        else:
            p.grad.copy_(value)


class LoRAFSDPPrecision(FSDPPrecision):
    """Lightning's FSDP precision, with norm clipping of the LoRA gradients [max_grad_norm].

    FSDP's own precision plugin refuses norm clipping because sharded gradients need FSDP's ``clip_grad_norm_``; the
    LoRA parameters are not sharded (every process has them whole, with the same averaged gradients), so the plain
    ``torch.nn.utils.clip_grad_norm_`` over the optimizer's parameters is exact.
    """

    def clip_grad_by_norm(self, optimizer: torch.optim.Optimizer, clip_val: int | float) -> None:
        Precision.clip_grad_by_norm(self, optimizer, clip_val)


class LoRAFSDPStrategy(FSDPModelSetup):
    """FSDP for LoRA training: the frozen model sharded by blocks, the LoRA and the VAE whole on every process.

    ``sharding_strategy``: ``FULL_SHARD`` (parameters gathered per block for forward and backward), ``SHARD_GRAD_OP``
    (gathered once per step; more memory, less communication), ``HYBRID_SHARD`` (full sharding inside a node,
    replicas across nodes), ``NO_SHARD`` (DDP-like). The LightningModule names what FSDP must leave whole through
    ``unsharded_modules()``.
    """

    strategy_name = "sdlora_fsdp"
    shards_frozen_model = True

    def __init__(self, sharding_strategy: str = "FULL_SHARD", wrapped_blocks: Iterable[str] = WRAPPED_BLOCKS, **kw):
        from torch.distributed.fsdp import MixedPrecision
        from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

        blocks = frozenset(wrapped_blocks)
        policy = partial(lambda_auto_wrap_policy, lambda_fn=partial(is_wrapped_block, names=blocks))
        kw.setdefault("mixed_precision", MixedPrecision())  # no casts: the precision group chose every dtype
        super().__init__(auto_wrap_policy=policy, sharding_strategy=sharding_strategy, **kw)
        self._root: nn.Module | None = None
        self._replicated: list[nn.Parameter] = []

    # ---------------------------------------------------------------------------------------------- wrapping
    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Wrap once; a later ``trainer.validate`` on the same LightningModule reuses the wrapped model."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self._root is not None and getattr(self._root, "module", None) is model:
            return self._root
        unsharded = list(getattr(model, "unsharded_modules", list)())
        for module in unsharded:  # FSDP moves only what it manages
            module.to(self.root_device)
        self.kwargs["ignored_states"] = unsharded
        self._replicated = [p for m in unsharded for p in m.parameters() if p.requires_grad]
        # device_id is a torch.device also on a CPU (Lightning's FSDPStrategy passes None there, which FSDP refuses)
        self._root = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )
        self._broadcast_replicated()
        if self.is_global_zero:
            units = len(FullyShardedDataParallel.fsdp_modules(self._root))
            host_vae = getattr(getattr(model, "host", None), "vae", False)  # waits in host memory: not held here
            log.info(
                "FSDP shards the frozen model over %d processes (%s) in %d units; the LoRA (%s parameters)%s whole "
                "on every process", self.world_size, self.sharding_strategy.name, units,
                f"{sum(p.numel() for p in self._replicated):,}", " stays" if host_vae else " and the VAE stay",
            )  # fmt: skip
        return self._root

    def _broadcast_replicated(self) -> None:
        """Start every process from rank 0's LoRA weights (equal already when seeded alike; this makes it certain)."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            with torch.no_grad():
                for p in self._replicated:
                    torch.distributed.broadcast(p.data, src=0)

    # ------------------------------------------------------------------------------------------ optimization
    def optimizer_step(self, optimizer, closure, model=None, **kwargs):
        """Average the LoRA gradients right after the (last accumulated) backward, before clipping and the step."""

        def closure_then_average():
            result = closure()
            if self.world_size > 1:
                params = [p for group in optimizer.param_groups for p in group["params"]]
                average_gradients(params, self.world_size, torch.distributed.all_reduce)
            return result

        return super().optimizer_step(optimizer, closure_then_average, model, **kwargs)

    def run_in_model(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` inside the root FSDP unit's forward, where the root's parameters are gathered and every block
        gathers its own when called; every process must make the same calls (sampling)."""
        if self._root is None:
            return fn()
        module = self.lightning_module
        results: list[Any] = []

        def forward(*_: Any, **__: Any) -> torch.Tensor:
            results.append(fn())
            return torch.zeros((), device=self.root_device)

        module.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's forward
        try:
            self._root()
        finally:
            del module.forward
        return results[0]

    # ----------------------------------------------------------------------------------------- checkpoints
    # A training state holds the LoRA (put in by sdlora.callbacks.save_state.TrainingStates) and a plain optimizer
    # state: the LoRA is not sharded, so FSDP's gathering of the whole frozen model and its sharded formats are unused.
    @property
    def lightning_restore_optimizer(self) -> bool:
        return True  # Lightning restores the (plain) optimizer and scheduler states, as for DDP

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {}

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        return None  # the LoRA goes back through TrainingStates.on_load_checkpoint

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, checkpoint) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            optimizer.load_state_dict(state)
            optimizer_to_device(optimizer, self.root_device)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        torch.cuda.empty_cache()
        return self.checkpoint_io.load_checkpoint(checkpoint_path)

    def remove_checkpoint(self, filepath) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(filepath)
