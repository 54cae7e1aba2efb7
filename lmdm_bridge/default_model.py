"""Where the embedded default bundle lives inside the package."""

from __future__ import annotations

from pathlib import Path

from lmdm_bridge.manifest import MANIFEST, BundleError

DEFAULT_BUNDLE = Path(__file__).parent / "default_bundle"


def default_bundle() -> Path:
    """The embedded default bundle, or a BundleError saying how to get a bundle."""
    if not (DEFAULT_BUNDLE / MANIFEST).is_file():
        raise BundleError("this lmdm-bridge has no embedded default model yet: pass --bundle DIR "
                          "(make one with `lmdm-bridge export --preset tiny --random-init --out "
                          "DIR`)")
    return DEFAULT_BUNDLE
