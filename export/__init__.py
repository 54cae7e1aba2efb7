"""lmdm_export: the torch side of lmdm-bridge.

The LMDM model (DiT with clean/noisy routing, attention patterns, block-wise KV cache), the
Oobleck autoencoder and the conditioners, samplers, the streaming rollout, checkpoint loading,
and (in later issues) the ONNX bundle writer, training and data preparation. It may import the
runtime package ``lmdm_bridge``; the runtime never imports this one.
"""
