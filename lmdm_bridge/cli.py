"""The ``lmdm-bridge`` command line: one entry point, one subcommand per job.

Each subcommand is a plain function taking the parsed arguments and returning an exit code, so
everything the CLI does can also be called from Python. Subcommands that need the torch side
import it lazily through :func:`require_export_extra`, so the runtime subcommands start fast and
work on a machine without torch.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from lmdm_bridge import __version__

EXPORT_EXTRA_HINT = "pip install 'lmdm-bridge[export]'"


class MissingExtraError(RuntimeError):
    """A subcommand needs an optional dependency group that is not installed."""


def require_export_extra(module: str = "lmdm_export") -> ModuleType:
    """Import a torch-side module, or fail with one line saying what to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "torch"
        raise MissingExtraError(
            f"this command needs the torch side ({missing} is not installed): "
            f"run {EXPORT_EXTRA_HINT}"
        ) from exc


def cmd_version(args: argparse.Namespace) -> int:
    """Print the package version and the versions of the engines it runs on."""
    import numpy
    import onnxruntime

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


def cmd_run(args: argparse.Namespace) -> int:
    """Start the main job on the embedded default model."""
    print("lmdm-bridge: the embedded default model and the daemon arrive with later issues "
          "(the bundle engine, `serve`, and the trained default). What is here now:\n")
    build_parser().print_help()
    return 0


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmdm-bridge",
        description="Play a Live Music Diffusion Model live: export it to an ONNX bundle with an "
                    "explicit KV cache, run it block by block with onnxruntime, and talk to DAWs "
                    "and Max/Pure Data over OSC and loopback audio.",
    )
    parser.add_argument("--version", action="version", version=f"lmdm-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("version", help="print the versions of lmdm-bridge and its engines")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("run", help="start the main job on the embedded default model")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except MissingExtraError as exc:
        print(f"lmdm-bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
