"""Reading and writing LoRA files in kohya's format.

``.safetensors`` files carry string metadata (``ss_*`` training keys and ``modelspec.*``) plus the two hashes kohya's
``save_weights`` adds for A1111/additional-networks: ``sshs_model_hash`` (SHA-256 of the tensor bytes) and
``sshs_legacy_hash`` (first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB), both computed on a
serialisation holding only the ``ss_*`` metadata. ``.ckpt``/``.pt`` files are a plain torch state dict without
metadata (kohya's save_model_as). Writes are atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from sdlora.errors import NonFiniteWeights
from sdlora.utils.atomic import atomic_write

SUFFIXES = {"safetensors": ".safetensors", "ckpt": ".ckpt", "pt": ".pt"}
SAVE_DTYPES = {None: None, "fp32": torch.float32, "float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya computes them."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_length = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_length :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


NONFINITE_CAUSES = (
    "likely causes: a learning rate that is too high (optimizer.lr, network.unet_lr, network.text_encoder_lr), an "
    "optimizer eps of 0 (optimizer.eps: its update divides by it where a gradient is 0), fp16 overflow (precision="
    "bf16_mixed or fp32)"
)


def nonfinite_count(tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(non-finite values, tensors holding any) over ``tensors``, with one fused pass per tensor."""
    values = modules = 0
    for tensor in tensors.values():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            values, modules = values + bad, modules + (bad > 0)
    return values, modules


def all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every value of ``params`` is finite: one fused norm per device, one host sync (a NaN or an infinity
    anywhere makes the sum of norms non-finite)."""
    if not params:
        return True
    norms = torch._foreach_norm([p.detach() for p in params])
    return bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse to write non-finite weights: :class:`NonFiniteWeights` naming the file and the likely causes."""
    values, count = nonfinite_count(tensors)
    if values:
        raise NonFiniteWeights(
            f"not writing {path}: {values} value(s) in {count} tensor(s) of the LoRA are NaN or infinite; "
            f"{NONFINITE_CAUSES}"
        )


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write a LoRA state dict atomically; the format follows the suffix (metadata only in .safetensors). Non-finite
    weights are refused (:func:`check_finite`): no file sdlora writes holds NaN or infinity."""
    path = Path(path)
    check_finite(tensors, path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = dict(metadata or {})
        model_hash, legacy_hash = safetensors_hashes(tensors, metadata)
        metadata.update(sshs_model_hash=model_hash, sshs_legacy_hash=legacy_hash)
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA file's tensors and metadata ({} for .ckpt/.pt)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state), {}
