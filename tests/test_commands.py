"""The bundle commands end to end: export -> verify -> render (with events) -> info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")

EXE = str(Path(sys.executable).with_name("lmdm-bridge"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "b"
    result = _run("export", "--preset", "tiny", "--random-init", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_export_refuses_an_existing_folder_without_force(bundle):
    result = _run("export", "--preset", "tiny", "--random-init", "--out", str(bundle))
    assert result.returncode == 2
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_verify_passes_on_a_fresh_export(bundle):
    result = _run("verify", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "14/14 checks within tolerance" in result.stdout
    assert "stream block-causal" in result.stdout and "stream enc-dec" in result.stdout


def test_render_with_events_is_deterministic(bundle, tmp_path):
    events = tmp_path / "events.json"
    events.write_text(json.dumps([
        {"time": 0, "prompt": "organ chorale"},
        {"time": 0.5, "prompts": [["organ chorale", 0.4], ["drum groove", 0.6]]},
        {"time": 1.0, "cfg": 2.5}, {"time": 1.2, "steps": 3}, {"time": 1.5, "eject": 4}]))
    outs = []
    for name in ("a.wav", "b.wav"):
        out = tmp_path / name
        result = _run("render", "--bundle", str(bundle), "--prompt", "test", "--seconds", "2",
                      "--out", str(out), "--seed", "3", "--events", str(events), "--json")
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["seconds"] == pytest.approx(2.0, abs=1e-4)
        assert stats["realtime_factor"] > 0 and stats["block_p95"] >= stats["block_median"]
        audio, rate = sf.read(str(out), dtype="float32")
        assert rate == 44100 and audio.shape == (88200, 2)
        outs.append(audio)
    assert np.array_equal(outs[0], outs[1])
    assert not list(tmp_path.glob(".*.tmp-*")), "a temporary file was left behind"


@pytest.mark.parametrize("content,message", [
    ("{", "not valid JSON"),
    ('[{"time": -1, "cfg": 2}]', "'time' must be a number of seconds >= 0"),
    ('[{"time": 0, "cfg": 2, "steps": 3}]', "exactly one of"),
    ('[{"time": 0, "prompts": [["a", -1]]}]', "weight > 0"),
])
def test_bad_events_file_is_named_and_nothing_is_written(bundle, tmp_path, content, message):
    events = tmp_path / "events.json"
    events.write_text(content)
    out = tmp_path / "x.wav"
    result = _run("render", "--bundle", str(bundle), "--prompt", "t", "--seconds", "1",
                  "--out", str(out), "--events", str(events))
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()


def test_render_without_a_bundle_says_what_to_do(tmp_path):
    result = _run("render", "--bundle", str(tmp_path / "nope"), "--prompt", "t", "--seconds",
                  "1", "--out", str(tmp_path / "x.wav"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "export" in result.stderr


def test_info_describes_geometry_and_graphs(bundle):
    result = _run("info", str(bundle))
    assert result.returncode == 0, result.stderr
    for text in ("block-causal", "bc_fused", "new_cache_k", "weights.bin", "inpaint"):
        assert text in result.stdout
