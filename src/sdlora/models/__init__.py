"""Model family adapters (SD1.5, SD2, SD2-v, SDXL and their tiny test twins) and model loading."""
