"""Subcommands of ``lmdm-bridge``: one module each, registered in :data:`COMMANDS`.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Parsers are declared here, in the runtime, and never import torch; commands that need the torch
side import it inside ``run`` through :func:`lmdm_bridge.cli.require_export_extra`, so
``lmdm-bridge --help`` stays fast and works without the ``export`` extra.
"""

from __future__ import annotations

from lmdm_bridge.commands import (
    bench,
    data,
    devices,
    eval,
    export,
    info,
    render,
    run,
    serve,
    train,
    verify,
    version,
)

COMMANDS = (run, serve, version, devices, info, render, export, verify, bench, data, train,
            eval)
