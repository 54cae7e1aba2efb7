"""The ``lmdm-bridge`` entry point: help, version, and the one-line message for a missing extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmdm_bridge import cli


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "version" in out and "run" in out


def test_version_prints_engines(capsys):
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lmdm-bridge ")
    assert "onnxruntime" in out


def test_installed_console_script_runs():
    exe = sys.executable.rsplit("/", 1)[0] + "/lmdm-bridge"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "COMMAND" in result.stdout


def test_missing_export_extra_is_one_clear_line():
    """Without torch, a torch-side command fails with one line naming what to install."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if the export extra were not installed\n"
        "from lmdm_bridge import cli\n"
        "try:\n"
        "    cli.require_export_extra('lmdm_export.model.dit')\n"
        "except cli.MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    assert "pip install 'lmdm-bridge[export]'" in lines[0] and "torch" in lines[0]
