"""Diffusion training maths as pure tensor functions: noise schedule, timesteps, noising, targets, loss."""
