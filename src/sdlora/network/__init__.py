"""LoRA network: target selection, kohya key naming, and the LoRA modules themselves."""
