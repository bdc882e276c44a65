"""Lightning callbacks: saving LoRA files."""
