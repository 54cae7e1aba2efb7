"""One tiny model and its exported bundle, shared by the engine tests of a test run.

Export takes seconds; caching it per process lets every engine test file use the same bundle.
The DiT's weights are all random (``randomize_``: zero-initialised output layers would hide
bugs); the rest of the model is its seeded default initialisation, so the VAE is random but the
same on every run.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from .conftest import randomize_

PROMPT = "a warm analog bass line with brushed drums"


@functools.cache
def tiny_model_and_bundle():
    """``(model, bundle folder)``; torch must be importable (callers importorskip it)."""
    import torch

    from lmdm_export.bundle.writer import ExportRequest, export_bundle
    from lmdm_export.model.lmdm import LMDM
    from lmdm_export.presets import get_preset

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LMDM(get_preset("tiny").config).eval()
    randomize_(model.dit, seed=0)
    root = Path(tempfile.mkdtemp(prefix="lmdm-engine-tests-"))
    atexit.register(shutil.rmtree, root, True)
    export_bundle(model, root / "tiny", ExportRequest(preset="tiny", include_source_weights=False),
                  progress=lambda message: None)
    return model, root / "tiny"


@functools.cache
def tiny_bundle():
    """The tiny bundle loaded once for the runtime tests (sessions and hashing are shared).
    One onnxruntime thread: the graphs are small, and spinning worker threads only compete
    with the torch side on a busy test machine."""
    from lmdm_bridge.bundle import Bundle

    return Bundle(tiny_model_and_bundle()[1], providers="cpu", threads=1)
