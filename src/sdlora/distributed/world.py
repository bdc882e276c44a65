"""Processes of a run, known from the config and the environment before the Trainer exists.

The data plan (steps per epoch, LR horizon) depends on the number of processes, so it is computed from
``trainer.devices × trainer.num_nodes`` before Lightning builds its strategy; the Trainer's ``world_size`` is checked
against it afterwards. Files written before training (``data_plan.json``, ``summary.json``) come from global rank 0
only, which a launcher announces in the environment: ``RANK`` (torchrun), ``NODE_RANK``/``LOCAL_RANK`` (the processes
Lightning's DDP starts itself), ``SLURM_PROCID`` (srun).
"""

from __future__ import annotations

import os
from typing import Any

from sdlora.errors import SdloraError

# Lightning strategies sdlora refuses: DeepSpeed (it partitions the LoRA weights, which the LoRA saver and max-norm
# need whole), Lightning's own FSDP variants (sdlora's trainer=fsdp keeps the LoRA whole: sdlora.distributed.fsdp), and
# those that start processes by spawning/forking (the child processes' saved files and final loss never come back to
# the main one, and they pickle the whole model).
_UNSUPPORTED_STRATEGIES = {
    "deepspeed": "DeepSpeed partitions the weights, which the LoRA saver and max-norm regularisation need whole",
    "fsdp": "Lightning's FSDP variants shard the LoRA weights; sdlora's FSDP shards only the frozen model "
    "(trainer=fsdp, trainer.strategy=fsdp with trainer.fsdp.* options)",
    "spawn": "spawned processes do not hand the saved files and losses back to the main process",
    "fork": "forked processes do not hand the saved files and losses back to the main process",
    "notebook": "forked processes do not hand the saved files and losses back to the main process",
}
FSDP = "fsdp"


def device_count(devices: Any, accelerator: str = "auto") -> int:
    """How many devices ``trainer.devices`` names on one node: an int, a list of indices, ``"0,1"``, ``"2"``,
    ``"auto"``/-1 (every device of the accelerator; 1 on CPU)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return _auto_count(accelerator)
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        if text.lstrip("-").isdigit():
            devices = int(text)
        else:
            raise SdloraError(f"trainer.devices={devices!r} is not a device count, a list of indices or 'auto'")
    if isinstance(devices, int):
        if devices == -1:
            return _auto_count(accelerator)
        if devices < 1:
            raise SdloraError(f"trainer.devices must be ≥ 1, -1 or 'auto', got {devices}")
        return devices
    try:
        return len(list(devices))
    except TypeError:
        raise SdloraError(f"trainer.devices={devices!r} is not a device count, a list of indices or 'auto'") from None


def _auto_count(accelerator: str) -> int:
    from sdlora.precision.policy import device_type

    kind = device_type(accelerator)
    if kind == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def planned_world_size(trainer_cfg: Any) -> int:
    """Processes of the run: devices per node × ``trainer.num_nodes`` (what Lightning's ``world_size`` will be)."""
    return device_count(trainer_cfg.devices, str(trainer_cfg.accelerator)) * int(trainer_cfg.num_nodes)


def strategy_problems(trainer_cfg: Any) -> list[str]:
    """``trainer.strategy`` values sdlora cannot train with, each with the reason and what to use instead."""
    strategy = str(trainer_cfg.strategy).lower()
    for word, reason in _UNSUPPORTED_STRATEGIES.items():
        if word in strategy and strategy != FSDP:
            return [f"trainer.strategy={trainer_cfg.strategy} is not supported: {reason}. Use trainer=ddp "
                    "(trainer.strategy=ddp or ddp_find_unused_parameters_true) or trainer=fsdp"]  # fmt: skip
    if int(trainer_cfg.num_nodes) < 1:
        return [f"trainer.num_nodes must be ≥ 1, got {trainer_cfg.num_nodes}"]
    return []


def uses_fsdp(trainer_cfg: Any) -> bool:
    """Whether the run uses sdlora's FSDP strategy (``trainer=fsdp``)."""
    return str(trainer_cfg.strategy).lower() == FSDP


def make_strategy(trainer_cfg: Any) -> Any:
    """Lightning's ``strategy=`` argument: sdlora's FSDP strategy object for ``fsdp``, else the name."""
    if not uses_fsdp(trainer_cfg):
        return trainer_cfg.strategy
    from sdlora.distributed.fsdp import LoRAFSDPStrategy

    fsdp = trainer_cfg.fsdp
    return LoRAFSDPStrategy(sharding_strategy=fsdp.sharding_strategy.value, wrapped_blocks=list(fsdp.wrapped_blocks))


def env_global_rank(devices_per_node: int = 1) -> int:
    """This process's global rank as its launcher announced it in the environment (0 when nothing did)."""
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("LOCAL_RANK", "").isdigit():
        return int(env.get("NODE_RANK", "0") or 0) * devices_per_node + int(env["LOCAL_RANK"])
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    return 0


def is_rank_zero(trainer_cfg: Any) -> bool:
    """Whether this process is global rank 0 of the run ``trainer_cfg`` describes."""
    return env_global_rank(device_count(trainer_cfg.devices, str(trainer_cfg.accelerator))) == 0


def processes_started_outside() -> bool:
    """Whether a launcher (torchrun, srun, Lightning's own DDP) started this process as one rank of several."""
    if "LOCAL_RANK" in os.environ or "RANK" in os.environ:
        return True
    return os.environ.get("SLURM_PROCID") is not None and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def check_world_size(trainer, planned: int) -> None:
    """The Trainer's processes must be those the data plan was made for."""
    if trainer.world_size != planned:
        raise SdloraError(
            f"Lightning runs {trainer.world_size} process(es), but trainer.devices × trainer.num_nodes = {planned} "
            "were planned; set trainer.devices to a count (e.g. 2) or a list of device indices"
        )
