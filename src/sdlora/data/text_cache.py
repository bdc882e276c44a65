"""Text-encoder output cache [kohya: --cache_text_encoder_outputs(_to_disk)] with caption variants.

kohya allows the cache only with static captions. sdlora precomputes ``data.caption_variants`` = K variants of each
caption whose folder shuffles or drops tags (each variant drawn once from (seed, image, variant)), plus the empty
caption when captions can be dropped; a training sample then picks one variant at random (or the empty caption when
dropped), so shuffling and dropout keep working with a cache. Identical captions are encoded once.

Cache files (``…_to_disk``) are keyed by the caption text, the family's encoding settings (clip_skip, token length),
every text encoder's fingerprint, the tokenizers' vocabularies and the dtype (:mod:`sdlora.data.cache_files`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdlora.data.cache_files import DiskCache, module_fingerprint
from sdlora.data.captions import augment_tags
from sdlora.data.latent_cache import CacheReport

TEXT_FORMAT = 1
_VARIANT_STREAM = 0x7E47  # keeps the variant generators apart from the per-sample streams


def caption_variants(dataset, num_variants: int) -> dict[int, list[str]]:
    """Per used record: K tag-augmented variants of its caption (1 = the caption itself when tags are static)."""
    variants = {}
    for record in sorted({e.record for e in dataset.entries}):
        rec = dataset.records[record]
        if rec.subset.options.augments_tags:
            rngs = [np.random.default_rng([dataset.seed, record, v, _VARIANT_STREAM]) for v in range(num_variants)]
            variants[record] = [augment_tags(rec.caption, rec.subset.options, rng) for rng in rngs]
        else:
            variants[record] = [rec.caption]
    return variants


def text_identity(family, components) -> dict[str, Any]:
    """What text-encoder outputs depend on besides the caption."""
    vocabularies = []
    for tokenizer in components.tokenizers:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
        vocabularies.append(hashlib.sha256(f"{vocab}|{tokenizer.pad_token}".encode()).hexdigest())
    return {
        "family": family.name,
        "encoding": type(family).__name__,
        "clip_skip": family.clip_skip,
        "max_token_length": family.max_token_length,
        "encoders": [module_fingerprint(te) for te in components.text_encoders],
        "tokenizers": vocabularies,
        "dtype": str(next(components.text_encoders[0].parameters()).dtype).removeprefix("torch."),
        **({"weighted_captions": True} if getattr(family, "weighted_captions", False) else {}),
    }


class TextStore:
    """Encoded captions by (record, variant); variant None is the empty caption (dropout)."""

    def __init__(self, variants: dict[int, list[str]], num_variants: int) -> None:
        self.variants = variants
        self.num_variants = num_variants
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.files: dict[str, Path] = {}

    def get(self, record: int, variant: int | None) -> tuple[str, dict[str, torch.Tensor]]:
        options = self.variants[record]
        caption = "" if variant is None else options[variant % len(options)]
        tensors = self.memory.get(caption)
        if tensors is None:
            tensors = DiskCache.load(self.files[caption])
        return caption, tensors


def cache_text_outputs(
    dataset,
    family,
    components,
    *,
    to_disk: bool,
    folder: Path | None = None,
    batch_size: int = 1,
    num_variants: int = 1,
    identity: dict[str, Any] | None = None,
    write: bool = True,
) -> CacheReport:
    """Encode every caption variant (and the empty caption where dropout may pick it); set ``dataset.text``.

    ``write=False``: valid cache files are used, missing ones are computed into memory and not written."""
    identity = identity or text_identity(family, components)
    variants = caption_variants(dataset, num_variants)
    captions = sorted({c for options in variants.values() for c in options})
    if any(dataset.records[r].subset.options.drops_captions for r in variants):
        captions = sorted({*captions, ""})
    store, report = TextStore(variants, num_variants), CacheReport(folder=folder)
    disk = DiskCache(folder) if to_disk else None
    todo = []
    for caption in captions:
        key = {"kind": "text", "format": TEXT_FORMAT, "caption": caption, **identity}
        problem = disk.problem(key) if disk is not None else "in memory"
        if problem is None:
            store.files[caption] = disk.path(key)
            report.reused += 1
        else:
            report.note(problem, disk.path(key) if disk is not None else None)
            todo.append((caption, key))
    for start in tqdm(range(0, len(todo), batch_size), desc="Caching text-encoder outputs", disable=not todo):
        chunk = todo[start : start + batch_size]
        with torch.no_grad():
            text = family.encode_text(components, [caption for caption, _ in chunk])
        for i, (caption, key) in enumerate(chunk):
            tensors = {"text_hidden": text.hidden_states[i].detach().cpu().clone()}
            if text.pooled is not None:
                tensors["text_pooled"] = text.pooled[i].detach().cpu().clone()
            if disk is not None and write:
                store.files[caption] = disk.write(key, tensors)
            else:
                store.memory[caption] = tensors
            report.computed += 1
            report.computed_keys.append(key)
    dataset.text = store
    return report
