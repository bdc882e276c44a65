"""sdlora: kohya_ss-compatible LoRA training for Stable Diffusion 1.5, 2.x and SDXL on Lightning + Hydra + diffusers.

Importing the package is cheap: heavy libraries (torch, diffusers, transformers, lightning) are imported by the
modules that need them, so ``python train.py --help`` and config errors answer at once.
"""

__version__ = "0.1.0"
