"""Cache files that can never go stale: content-addressed ``.safetensors`` files with their key inside.

A cached value (an image's VAE posterior, a caption's text-encoder outputs) has a *key*: a JSON object naming
everything the value depends on — the image bytes' SHA-256, bucket, resize, crop, flip, the model's weights
fingerprint and dtype, the preprocessing version. The file name is the SHA-256 of that key, and the key is stored in
the file's metadata, with a SHA-256 of its tensors' bytes. A file is reused only if its stored key equals the wanted
key, its tensors have the expected shapes and their bytes match the checksum; anything else (another VAE, another
crop, edited image bytes, a truncated file, overwritten tensor data) is recomputed and rewritten atomically — a
damaged file with a warning saying so. A file that changes while a run reads it is an error naming it. Files live in
a cache folder (``<run folder>/cache`` or ``data.cache_dir``), never in the dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from sdlora.errors import SdloraError
from sdlora.utils.atomic import atomic_write

KEY_FIELD = "sdlora_cache_key"
CHECKSUM_FIELD = "sdlora_tensor_sha256"
DAMAGED = "damaged"


def key_json(key: dict[str, Any]) -> str:
    """The canonical JSON text of a cache key (sorted keys, no spaces)."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        flat = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensors[name].shape)}".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(key_json(key).encode("utf-8")).hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over a module's class, config and every parameter/buffer (name, dtype, shape, bytes).

    Two modules with the same fingerprint compute the same function; a changed weight changes it.
    """
    digest = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        items = dict(config).items() if hasattr(config, "items") else vars(config).items()
        digest.update(repr(sorted((str(k), repr(v)) for k, v in items if not str(k).startswith("_"))).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())  # hashed in place, no copy
    return digest.hexdigest()


class DiskCache:
    """One folder of cache files (``<folder>/<key digest>.safetensors``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: dict[str, Any]) -> Path:
        return self.folder / f"{key_digest(key)}.safetensors"

    def problem(self, key: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None = None) -> str | None:
        """None when the file for ``key`` can be reused (it stores exactly this key, tensors of ``shapes`` and bytes
        matching its checksum); else why not — :data:`DAMAGED` for a file whose tensors do not match its checksum or
        cannot be read."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return "missing"
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get(KEY_FIELD) != key_json(key) or CHECKSUM_FIELD not in metadata:
                    return "another key"
                if shapes is not None and (
                    set(f.keys()) != set(shapes)
                    or any(tuple(f.get_slice(name).get_shape()) != shape for name, shape in shapes.items())
                ):
                    return "other shapes"
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except Exception:  # truncated or not a safetensors file
            return DAMAGED
        return None if tensor_checksum(tensors) == metadata[CHECKSUM_FIELD] else DAMAGED

    def valid(self, key: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None = None) -> bool:
        return self.problem(key, shapes) is None

    def write(self, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
        from safetensors.torch import save_file

        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        metadata = {KEY_FIELD: key_json(key), CHECKSUM_FIELD: tensor_checksum(tensors)}
        return atomic_write(self.path(key), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @staticmethod
    def load(path: Path) -> dict[str, torch.Tensor]:
        """The tensors of a cache file, checked against its checksum (a file changed during the run is an error)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                expected = (f.metadata() or {}).get(CHECKSUM_FIELD)
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except Exception as exc:
            raise SdloraError(f"cache file {path} cannot be read ({exc}); delete it and run again") from None
        if expected != tensor_checksum(tensors):
            raise SdloraError(
                f"cache file {path} changed while the run used it (its tensors do not match their checksum); delete "
                "it and run again"
            )
        return tensors
