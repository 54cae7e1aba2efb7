"""The ``lmdm-bridge`` command line: one entry point, one subcommand per job.

Each subcommand is a plain function taking the parsed arguments and returning an exit code, so
everything the CLI does can also be called from Python. Subcommands that need the torch side
import it lazily through :func:`require_export_extra`, so the runtime subcommands start fast and
work on a machine without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from lmdm_bridge import __version__

EXPORT_EXTRA_HINT = "pip install 'lmdm-bridge[export]'"


class MissingExtraError(RuntimeError):
    """A subcommand needs an optional dependency group that is not installed."""


class CommandError(RuntimeError):
    """A user-facing failure: printed as one line naming the problem and the fix, exit code 2."""


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


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from lmdm_bridge.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="lmdm-bridge",
        description="Play a Live Music Diffusion Model live: export it to an ONNX bundle with an "
                    "explicit KV cache, run it block by block with onnxruntime, and talk to DAWs "
                    "and Max/Pure Data over OSC and loopback audio.",
    )
    parser.add_argument("--version", action="version", version=f"lmdm-bridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what loads and where it runs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except MissingExtraError as exc:
        print(f"lmdm-bridge: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"lmdm-bridge {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
