"""Model modules: the LMDM DiT, its attention patterns and cache, the autoencoder, the conditioners."""
