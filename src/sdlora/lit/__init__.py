"""The LightningModule that trains a LoRA network on a frozen Stable Diffusion model."""
