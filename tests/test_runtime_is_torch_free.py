"""The runtime never imports torch: a laptop that only plays needs no torch install.

Each ``lmdm_bridge`` module is imported in a fresh interpreter (a module imported earlier in the
test process could hide an import), and ``sys.modules`` must not contain torch afterwards.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lmdm_bridge

MODULES = sorted(
    ["lmdm_bridge"]
    + [m.name for m in pkgutil.walk_packages(lmdm_bridge.__path__, "lmdm_bridge.")
       if not m.name.endswith("__main__")]  # runs the CLI; it imports only lmdm_bridge.cli
)


def test_every_runtime_module_is_found():
    assert "lmdm_bridge.cli" in MODULES


def test_importing_the_runtime_never_imports_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "    assert not leaked, f'{name} imported {leaked[:3]}'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
