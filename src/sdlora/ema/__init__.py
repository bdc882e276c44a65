"""Exponential moving averages of the LoRA weights: decay schedules, fp32 shadow copies, post-hoc EMA
(docs/design.md §1; the callback: :mod:`sdlora.callbacks.ema`; the tool: :mod:`sdlora.tools.posthoc_ema`)."""
