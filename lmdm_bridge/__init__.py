"""lmdm-bridge runtime: plays an exported LMDM bundle with onnxruntime.

This package never imports torch; the torch side lives in ``lmdm_export`` (folder ``export/``).
The two meet only through the bundle on disk.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmdm-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
