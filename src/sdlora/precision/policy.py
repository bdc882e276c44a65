"""Which dtype each part of a run uses, from the ``precision`` group and the training device (docs/kohya.md §10.3).

| option       | autocast (Lightning) | frozen U-Net/TEs | VAE                    | LoRA params, grads, opt. state |
|--------------|----------------------|------------------|------------------------|--------------------------------|
| fp32         | none (32-true)       | float32          | float32                | float32                        |
| bf16_mixed   | bf16 (bf16-mixed)    | bfloat16         | bf16 (fp32 for SDXL)   | float32                        |
| fp16_mixed   | fp16 (16-mixed)      | float16          | fp16 (fp32 for SDXL)   | float32 (grad scaler)          |
| full_bf16    | bf16 (bf16-mixed)    | bfloat16         | bf16 (fp32 for SDXL)   | bfloat16                       |
| full_fp16    | fp16 (16-mixed)      | float16          | fp16 (fp32 for SDXL)   | float16 (fp16-grad scaler)     |

``precision.no_half_vae`` overrides the VAE column (true: float32; false: the frozen model's dtype). Lightning has no
fp16 autocast on a CPU: there fp16_mixed runs as bf16_mixed and full_fp16 as full_bf16, with a warning. These
fallbacks are applied once, when the config is resolved: the resolved ``precision`` node is what runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdlora.config.schema import PrecisionConfig

DTYPES = ("float32", "float16", "bfloat16")
TRAINER_PRECISIONS = {"32-true": "float32", "16-mixed": "float16", "bf16-mixed": "bfloat16"}


def torch_dtype(name: str) -> Any:
    """``"bfloat16"`` → ``torch.bfloat16``."""
    import torch

    return getattr(torch, name)


def vae_dtype(precision: PrecisionConfig) -> str:
    """The VAE's dtype of a resolved precision: float32 with ``no_half_vae``, else the frozen model's."""
    return "float32" if precision.no_half_vae else precision.weight_dtype


def trainer_kwargs(precision: PrecisionConfig, device_type: str, fsdp: bool = False) -> dict[str, Any]:
    """``precision=`` for the Trainer, the mixed-precision plugin with the fp16-gradient scaler (full_fp16), or under
    trainer=fsdp the FSDP precision plugin (:class:`~sdlora.distributed.fsdp.LoRAFSDPPrecision`)."""
    if fsdp:
        from sdlora.distributed.fsdp import LoRAFSDPPrecision

        return {"plugins": [LoRAFSDPPrecision(precision.trainer_precision)]}
    if precision.lora_dtype == "float16" and precision.trainer_precision == "16-mixed":
        from lightning.pytorch.plugins.precision import MixedPrecision

        from sdlora.precision.scaler import FP16ParamsGradScaler

        scaler = FP16ParamsGradScaler(device_type)
        return {"plugins": [MixedPrecision("16-mixed", device_type, scaler=scaler)]}
    return {"precision": precision.trainer_precision}


def check_precision(node: Any) -> list[str]:
    """Value and combination problems of the ``precision`` node."""
    problems = []
    flag = node.trainer_precision
    if flag not in TRAINER_PRECISIONS:
        problems.append(f"precision.trainer_precision={flag!r} must be one of {', '.join(TRAINER_PRECISIONS)}")
    for key in ("weight_dtype", "lora_dtype"):
        if node[key] not in DTYPES:
            problems.append(f"precision.{key}={node[key]!r} must be one of {', '.join(DTYPES)}")
    if problems:
        return problems
    autocast = TRAINER_PRECISIONS[flag]
    if node.weight_dtype not in ("float32", autocast):
        problems.append(
            f"precision.weight_dtype={node.weight_dtype} does not fit precision.trainer_precision={flag}: the frozen "
            f"model must be float32 or the autocast dtype ({autocast})"
        )
    if node.lora_dtype != "float32" and node.lora_dtype != autocast:
        problems.append(
            f"precision.lora_dtype={node.lora_dtype} needs precision.trainer_precision="
            f"{'16-mixed' if node.lora_dtype == 'float16' else 'bf16-mixed'} (kohya: full_fp16 requires mixed "
            "precision fp16, full_bf16 requires bf16); use precision=full_fp16 or precision=full_bf16"
        )
    if node.stochastic_rounding and node.lora_dtype != "bfloat16":
        problems.append(
            "precision.stochastic_rounding=true rounds bfloat16 LoRA updates: use it with precision=full_bf16"
        )
    return problems


def resolve_precision(node: Any, device_type: str, vae_needs_fp32: bool) -> tuple[dict[str, Any], list[str]]:
    """The precision options that run on ``device_type`` ("cpu", "cuda", …) and the warnings about any fallback: fp16
    autocast becomes bf16 on a CPU; a null ``no_half_vae`` becomes the family's need (float32 VAE for SDXL)."""
    flag, weight, lora, mixed = node.trainer_precision, node.weight_dtype, node.lora_dtype, node.mixed_precision
    name, notes = node.name, []
    if flag == "16-mixed" and device_type == "cpu":
        flag, mixed = "bf16-mixed", "bf16"
        weight = "bfloat16" if weight == "float16" else weight
        if lora == "float16":
            lora, name = "bfloat16", "full_bf16"
            notes.append(
                f"precision={node.name}: fp16 autocast and its gradient scaler are not available on cpu; training "
                "as precision=full_bf16 (LoRA parameters, gradients and optimizer state in bfloat16)"
            )
        else:
            name = "bf16_mixed"
            notes.append(
                f"precision={node.name}: fp16 autocast is not available on cpu; using bf16 autocast and a bfloat16 "
                "frozen model instead (precision=bf16_mixed)"
            )
    no_half_vae = node.no_half_vae if node.no_half_vae is not None else bool(vae_needs_fp32)
    values = {"name": name, "trainer_precision": flag, "weight_dtype": weight, "lora_dtype": lora,
              "mixed_precision": mixed, "no_half_vae": no_half_vae}  # fmt: skip
    return values, notes


#: The ``trainer.accelerator`` values that name a GPU, and all values sdlora trains with (Lightning's others — tpu,
#: hpu — it does not support).
GPU_ACCELERATORS = ("gpu", "cuda", "mps")
ACCELERATORS = ("auto", "cpu", *GPU_ACCELERATORS)


def device_type(accelerator: str) -> str:
    """The device type Lightning's ``accelerator`` option will train on ("cuda", "mps" or "cpu"). Where the answer is
    certainly "cpu" it is given without importing torch (:func:`certainly_cpu`); otherwise torch decides."""
    accelerator = str(accelerator).lower()
    if accelerator not in (*GPU_ACCELERATORS, "auto") or certainly_cpu(accelerator):
        return "cpu"
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "cuda"
    if accelerator in ("mps", "auto") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def certainly_cpu(accelerator: str) -> bool:
    """Whether no GPU can be used, known without importing torch (about 1 s; docs/design.md §7): MPS exists only on
    macOS, and CUDA/ROCm needs a torch build for it (``torch/version.py``: ``cuda`` or ``hip`` not None) and, on
    Linux, a loaded NVIDIA driver (``/proc/driver/nvidia/version``) or the ROCm device (``/dev/kfd``). When the build
    cannot be read the answer is False (torch decides)."""
    if accelerator in ("mps", "auto") and sys.platform == "darwin":
        return False
    if accelerator == "mps":
        return True
    build = torch_build()
    if build is None:
        return False
    cuda, hip = build
    if cuda is None and hip is None:
        return True
    if not sys.platform.startswith("linux"):
        return False
    return not ((cuda and os.path.exists("/proc/driver/nvidia/version")) or (hip and os.path.exists("/dev/kfd")))


def torch_build() -> tuple[str | None, str | None] | None:
    """(CUDA version, HIP version) the installed torch was built with, read from ``torch/version.py`` without
    importing torch; None when it cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    values = {}
    for key in ("cuda", "hip"):
        match = re.search(rf"^{key}\s*(?::[^=]*)?=\s*(.+?)\s*$", text, re.MULTILINE)
        if match is None:
            return None
        raw = match.group(1)
        values[key] = None if raw == "None" else raw.strip("'\"")
    return values["cuda"], values["hip"]
