"""The daemon: `lmdm-bridge serve` (audio callback, generation worker, OSC server)."""
