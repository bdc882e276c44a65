"""Cache files that can never go stale: content-addressed ``.safetensors`` files with their key inside.

A cached value (an image's VAE posterior, a caption's text-encoder outputs) has a *key*: a JSON object naming
everything the value depends on — the image bytes' SHA-256, bucket, resize, crop, flip, the model's weights
fingerprint and dtype, the preprocessing version. The file name is the SHA-256 of that key, and the key is stored in
the file's metadata. A file is reused only if its stored key equals the wanted key and its tensors have the expected
shapes; anything else (another VAE, another crop, edited image bytes, a truncated file) is recomputed and rewritten
atomically. Files live in a cache folder (``<run folder>/cache`` or ``data.cache_dir``), never in the dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from sdlora.utils.atomic import atomic_write

KEY_FIELD = "sdlora_cache_key"


def key_json(key: dict[str, Any]) -> str:
    """The canonical JSON text of a cache key (sorted keys, no spaces)."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


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

    def valid(self, key: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None = None) -> bool:
        """Whether the file for ``key`` exists, stores exactly this key, and has tensors of ``shapes``."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get(KEY_FIELD) != key_json(key):
                    return False
                if shapes is not None:
                    if set(f.keys()) != set(shapes):
                        return False
                    return all(tuple(f.get_slice(name).get_shape()) == shape for name, shape in shapes.items())
        except Exception:  # truncated or not a safetensors file: recompute it
            return False
        return True

    def write(self, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
        from safetensors.torch import save_file

        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        metadata = {KEY_FIELD: key_json(key)}
        return atomic_write(self.path(key), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @staticmethod
    def load(path: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(path))
