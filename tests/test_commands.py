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
                      "--out", str(out), "--seed", "3", "--events", str(events), "--json",
                      "--limiter")
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["seconds"] == pytest.approx(2.0, abs=1e-4)
        assert stats["realtime_factor"] > 0 and stats["block_p95"] >= stats["block_median"]
        audio, rate = sf.read(str(out), dtype="float32")
        assert rate == 44100 and audio.shape == (88200, 2)
        outs.append(audio)
    assert np.array_equal(outs[0], outs[1])
    assert not list(tmp_path.glob(".*.tmp-*")), "a temporary file was left behind"


def test_render_takes_a_guidance_interval(bundle, tmp_path):
    """`--cfg-interval` reaches the engine (another stream than every-step guidance) and the
    statistics; a reversed interval is refused with the rule it breaks. The random-init
    model's branches barely differ, hence the large scale."""
    audio = {}
    for name, extra in (("all", []), ("part", ["--cfg-interval", "0.3", "0.99"])):
        out = tmp_path / f"{name}.wav"
        result = _run("render", "--bundle", str(bundle), "--prompt", "organ chorale",
                      "--seconds", "1", "--out", str(out), "--cfg", "30", "--json", *extra)
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["cfg_interval"] == ([0.3, 0.99] if extra else [0.0, 1.0])
        audio[name], _ = sf.read(str(out), dtype="float32")
    assert np.abs(audio["all"] - audio["part"]).max() > 1e-4  # 3e-4 here: 10 LSB of 16 bits
    result = _run("render", "--bundle", str(bundle), "--prompt", "x", "--seconds", "1",
                  "--out", str(tmp_path / "bad.wav"), "--cfg-interval", "0.9", "0.1")
    assert result.returncode != 0
    assert "0 <= t_lo <= t_hi <= 1" in result.stderr
    assert not (tmp_path / "bad.wav").exists()


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


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".ogg"])
def test_compressed_outputs_decode_to_the_rendered_audio(tmp_path, suffix):
    from pedalboard.io import AudioFile

    from lmdm_bridge.render import write_audio_atomic

    t = np.arange(22050) / 22050
    audio = np.stack((0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)))
    out = tmp_path / f"tone{suffix}"
    write_audio_atomic(out, audio.astype(np.float32), 22050)
    with AudioFile(str(out)) as f:
        assert (f.samplerate, f.num_channels) == (22050, 2)
        back = f.read(f.frames)
    assert abs(back.shape[1] - 22050) < 2048  # codecs may pad to their frame size
    n = min(back.shape[1], 22050)
    lossless = suffix == ".flac"
    # Compare levels, not samples: lossy encoders shift the signal by their priming delay.
    rms = np.sqrt(np.mean(back[:, :n] ** 2, axis=1))
    assert np.allclose(rms, [0.5 / np.sqrt(2), 0.3 / np.sqrt(2)], rtol=1e-3 if lossless else 0.1)
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_unknown_output_extension_is_refused_before_rendering(bundle, tmp_path):
    out = tmp_path / "x.aiff"
    result = _run("render", "--bundle", str(bundle), "--prompt", "t", "--seconds", "1",
                  "--out", str(out))
    assert result.returncode == 2
    assert "extension must name a format" in result.stderr and ".mp3" in result.stderr
    assert not out.exists()


def test_the_embedded_default_model_renders_music_without_a_bundle_flag(tmp_path):
    """The shipped bundle (make default-model's output) is in the package, under the size
    limit, intact (manifest checksums), and `render` without --bundle plays it: a level
    signal with tonal structure, not silence or noise."""
    from lmdm_bridge.default_model import DEFAULT_BUNDLE
    from lmdm_bridge.manifest import read_manifest

    manifest = read_manifest(DEFAULT_BUNDLE)  # verifies every file's sha256
    assert manifest.dtype == "int8-all"
    size = sum(f.stat().st_size for f in DEFAULT_BUNDLE.iterdir())
    assert size < 60e6, f"the embedded default is {size / 1e6:.1f} MB"
    out = tmp_path / "organ.wav"
    result = _run("render", "--prompt", "church organ chorale in F major, 86 bpm", "--seconds",
                  "6", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == manifest.geometry.sample_rate
    settled = audio[rate:]  # after the decoder's latency
    rms = float(np.sqrt(np.mean(settled ** 2)))
    assert 0.02 < rms < 0.7 and np.abs(settled).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(settled[:4 * rate] * np.hanning(4 * rate))) ** 2
    top = np.sort(spectrum)[::-1]
    assert top[:200].sum() > 0.5 * spectrum.sum()  # energy in partials, as music has


def test_render_limiter_holds_peaks_and_keeps_quiet_audio_in_place():
    from lmdm_bridge.render import limit

    rate = 22050
    t = np.arange(rate) / rate
    quiet = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    loud = np.concatenate([quiet, 3 * quiet], axis=1)  # the second half would clip
    out = limit(loud, rate)
    assert out.shape == loud.shape and np.abs(out).max() <= 10 ** (-0.3 / 20) + 1e-6
    # latency compensated: the quiet half comes out sample for sample, not delayed
    np.testing.assert_allclose(out[:, :rate // 2], loud[:, :rate // 2], atol=1e-6)


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
