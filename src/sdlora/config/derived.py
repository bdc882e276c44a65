"""Options computed from other options once the config is valid, before anything uses them.

``network.alpha_ratio`` r: ``network.alpha`` = r × ``network.rank`` (r = 0.5 is the common "alpha = rank / 2"; 1
gives scale 1). A search over rank then keeps the LoRA scale alpha/rank = r fixed, or searches r itself
(``hparams_search=optuna``). The LoRA metadata records the resulting alpha (``ss_network_alpha``), as kohya records
the alpha it used.
"""

from __future__ import annotations

from omegaconf import DictConfig


def apply_derived_options(cfg: DictConfig) -> None:
    """Resolve ``network.alpha_ratio`` into ``network.alpha`` (in place)."""
    ratio = cfg.network.get("alpha_ratio")
    if ratio is not None:
        cfg.network.alpha = float(ratio) * cfg.network.rank
