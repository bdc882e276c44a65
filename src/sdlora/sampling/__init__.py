"""Sample images during training: kohya's prompt files, the samplers, generation with a diffusers pipeline."""
