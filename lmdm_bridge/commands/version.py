"""``lmdm-bridge version``: the versions of lmdm-bridge and of the engines it runs on."""

from __future__ import annotations

import argparse
import importlib
import platform

from lmdm_bridge import __version__

NAME = "version"
HELP = "print the versions of lmdm-bridge and its engines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    import numpy
    import onnxruntime

    from lmdm_bridge.cli import EXPORT_EXTRA_HINT

    print(f"lmdm-bridge {__version__}")
    providers = ", ".join(onnxruntime.get_available_providers())
    print(f"python {platform.python_version()}, numpy {numpy.__version__}, "
          f"onnxruntime {onnxruntime.__version__} ({providers})")
    try:
        torch = importlib.import_module("torch")
        print(f"torch {torch.__version__} (export extra installed)")
    except ModuleNotFoundError:
        print(f"torch not installed (runtime only; for export and training: {EXPORT_EXTRA_HINT})")
    return 0
