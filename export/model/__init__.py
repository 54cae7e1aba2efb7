"""Model modules: the LMDM DiT, its attention patterns and cache, autoencoder and conditioners."""
