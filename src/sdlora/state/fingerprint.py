"""What a resumed run must share with the run that saved the state: the data order and the schedule.

The fingerprint (stored in ``state.json``) holds the settings that decide which batch comes at which step and which
learning rate it gets: the seed, batch size and number of processes (together the global batch), gradient
accumulation, the dataset (every sample's image and bucket, in order), the optimizer and scheduler nodes and the
per-group learning-rate options, and the schedule horizon (the run's total optimizer steps and the limits it came
from). :func:`compare` lists the differences in readable form; the horizon is compared separately, because raising
``trainer.max_steps``/``trainer.max_epochs`` is allowed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sdlora.config.frozen import thaw
from sdlora.config.schema import TrainConfig

LR_OPTIONS = ("unet_lr", "text_encoder_lr", "block_lr_weight", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
              "loraplus_text_encoder_lr_ratio")  # fmt: skip


def dataset_digest(plan: Any) -> dict[str, Any]:
    """A digest of the samples in order (image path and bucket of every entry) and a short description.

    The SHA-256 of ``json.dumps([[path, W, H], …])`` over the entries; each distinct entry object's row is encoded
    once and the rows joined as ``json.dumps`` joins them (an image's repeats share their entry object)."""
    rows: dict[int, str] = {}
    for e in plan.entries:
        if id(e) not in rows:
            rows[id(e)] = json.dumps([str(plan.records[e.record].path), *e.bucket])
    text = "[" + ", ".join([rows[id(e)] for e in plan.entries]) + "]"
    digest = hashlib.sha256(text.encode()).hexdigest()
    buckets = len(plan.buckets())
    used = sum(n > 0 for n in plan.repeats)
    return {"sha256": digest, "text": f"{used} images, {len(plan.entries)} samples with repeats, {buckets} buckets"}


def _setting(value: Any) -> Any:
    """A config value as JSON data (open nodes without ``_partial_``)."""
    plain = thaw(value)
    return {k: v for k, v in plain.items() if k != "_partial_"} if isinstance(plain, dict) else plain


def fingerprint(config: TrainConfig, plan: Any) -> dict[str, Any]:
    """The schedule-affecting settings of a run (JSON-serialisable), read from the resolved config."""
    return {
        "settings": {
            "seed": config.seed,
            "data.batch_size": config.data.batch_size,
            "processes": plan.world_size,  # trainer.devices × trainer.num_nodes: the global batch
            "trainer.accumulate_grad_batches": config.trainer.accumulate_grad_batches,
            "dataset": dataset_digest(plan),
            "optimizer": _setting(config.optimizer),
            "scheduler": _setting(config.scheduler),
            **{f"network.{k}": _setting(getattr(config.network, k)) for k in LR_OPTIONS},
        },
        "horizon": {
            "total_steps": plan.length.total_steps,
            "steps_per_epoch": plan.length.steps_per_epoch,
            "trainer.max_steps": config.trainer.max_steps,
            "trainer.max_epochs": config.trainer.max_epochs,
        },
    }


def fingerprint_hash(print_: dict[str, Any]) -> str:
    """SHA-256 of the settings part (the horizon excluded)."""
    return hashlib.sha256(json.dumps(print_["settings"], sort_keys=True).encode()).hexdigest()


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and set(value) != {"sha256", "text"}:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def compare(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings that differ, one line each: ``optimizer.lr: 0.0001 (state) → 0.0002 (now)``."""
    old, new = {}, {}
    for key, value in saved["settings"].items():
        old.update(_flatten(value, key))
    for key, value in current["settings"].items():
        new.update(_flatten(value, key))
    lines = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if key == "dataset" and a != b and isinstance(a, dict) and isinstance(b, dict):
            lines.append(f"dataset: the images, repeats or buckets differ ({a['text']} in the state → {b['text']} now)")
        elif a != b:
            lines.append(f"{key}: {a!r} (state) → {b!r} (now)")
    return lines
