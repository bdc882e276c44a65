"""Optimizer and learning-rate scheduler construction from Hydra ``_target_`` + ``_partial_`` configs."""
