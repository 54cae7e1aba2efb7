"""Training stages of the default model: codec, base DiT, LMDM fine-tuning, ARC-Forcing."""
