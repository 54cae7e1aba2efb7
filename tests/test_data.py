"""The training-corpus renderer (lmdm_export.data): a smoke corpus rendered once per module.

Skips, with the reason, where music21, fluidsynth or the Debian soundfont/sample packages are
missing (`make` does not install them: see configs/data/*.toml for what the corpus needs).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "data" / "smoke.toml"
DEFAULT = ROOT / "configs" / "data" / "default.toml"
FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SONIC_PI = Path("/usr/share/doc/sonic-pi-samples/copyright")

pytest.importorskip("music21", reason="music21 is not installed (pip install music21)")
sf = pytest.importorskip("soundfile")


def _skip_without_renderer() -> None:
    from lmdm_export.data.synth import fluidsynth_available

    if not fluidsynth_available():
        pytest.skip("fluidsynth unavailable: apt-get install fluidsynth; pip install pyfluidsynth")
    for path, package in ((FLUID_R3, "fluid-soundfont-gm"), (SONIC_PI, "sonic-pi-samples")):
        if not path.exists():
            pytest.skip(f"{path} missing: apt-get install {package}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(config, out folder, summary, records) of the smoke corpus."""
    _skip_without_renderer()
    from lmdm_export.data import load_config, render_corpus
    from lmdm_export.data.records import read_jsonl

    config = load_config(SMOKE)
    out = tmp_path_factory.mktemp("corpus")
    summary = render_corpus(config, out)
    return config, out, summary, read_jsonl(out / "metadata.jsonl")


# -- config ---------------------------------------------------------------------------------


def test_default_toml_is_the_builtin_default():
    from lmdm_export.data import default_config, load_config

    assert load_config(DEFAULT) == default_config()
    assert load_config(None) == default_config()


def test_unknown_keys_are_rejected_by_name(tmp_path):
    from lmdm_export.data import load_config

    bad = tmp_path / "bad.toml"
    bad.write_text(SMOKE.read_text().replace("variants = 2", "varaints = 2"))
    with pytest.raises(ValueError, match=r"scores\[0\]: unknown key\(s\) varaints"):
        load_config(bad)
    bad.write_text('sample_rate = 22050\nsampel_rate = 1\n')
    with pytest.raises(ValueError, match="sampel_rate"):
        load_config(bad)


def test_json_config_round_trips(tmp_path):
    from lmdm_export.data import load_config
    from lmdm_export.data.config import DataConfig, from_dict

    config = load_config(SMOKE)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(path) == config
    assert from_dict(DataConfig, config.to_dict()) == config


# -- pure parts ------------------------------------------------------------------------------


def test_key_names_follow_the_transposition():
    from lmdm_export.data.captions import key_name

    assert key_name(7, "major") == "G major"
    assert key_name(7, "major", 3) == "Bb major"
    assert key_name(9, "minor", -1) == "G# minor"
    assert key_name(0, "minor", 3) == "Eb minor"
    assert key_name(2, "dorian", 12) == "D dorian"


def test_drum_patterns_fit_their_bars_and_groove_is_seeded():
    from lmdm_export.data.drums import FILLS, STYLES, bars_for, groove

    for name, style in STYLES.items():
        for pattern in style.patterns:
            for piece, steps in pattern.items():
                assert len(steps) == style.beats * style.steps * style.bars, (name, piece)
    assert all(len(s) == 12 for fill in FILLS for s in fill.values())
    a = groove("funk", 100.0, bars_for("funk", 100.0, 20.0), 0, np.random.default_rng(1))
    b = groove("funk", 100.0, bars_for("funk", 100.0, 20.0), 0, np.random.default_rng(1))
    assert a == b and {v.name for v in a.voices} >= {"kick", "snare", "hats"}


def test_the_drum_loop_styles_have_kit_grooves_with_held_out_pieces():
    """Every style word of the sonic-pi drum loops' captions ("breakbeat", "industrial") is
    also a drum-kit style of the default corpus, planned under "drums" in both splits, so a
    caption naming it is not learned from one recorded loop (session 22's regression)."""
    from lmdm_export.data import default_config
    from lmdm_export.data.drums import STYLES, bars_for, groove
    from lmdm_export.data.plan import plan_corpus

    config = default_config()
    kit_styles = {STYLES[s].caption for s in config.drums.styles if STYLES[s].family == "kit"}
    loop_words = {"breakbeat", "industrial"}
    drum_loops = {info.caption for info in config.loops.loops if info.label == "drums"}
    assert {f"{word} drum loop" for word in loop_words} <= drum_loops
    assert loop_words <= kit_styles
    jobs = [j for j in plan_corpus(config) if j.source == "drums" and j.style in loop_words]
    assert {j.split for j in jobs} == {"train", "val"}
    assert {v.label for j in jobs for v in j.variants} == {"drums"}
    for name in loop_words:
        perf = groove(name, 130.0, bars_for(name, 130.0, 20.0), 0, np.random.default_rng(2))
        assert {v.name for v in perf.voices} >= {"kick", "snare"}


def test_drum_captions_are_worded_several_ways_by_their_own_rng():
    """A kit groove's caption says "drum groove", "drum loop" or "drum beat" (about half,
    a quarter, a quarter), always with its style and tempo; without an rng, "drum groove"."""
    from lmdm_export.data.captions import drum_caption

    rng = np.random.default_rng(0)
    caps = [drum_caption("breakbeat", "jazz", 125.4, rng) for _ in range(400)]
    assert all(c.startswith("breakbeat drum ") and c.endswith(", 125 bpm") for c in caps)
    shares = {w: sum(f"drum {w}," in c for c in caps) / len(caps)
              for w in ("groove", "loop", "beat")}
    assert sum(shares.values()) == 1.0 and 0.4 < shares["groove"] < 0.6
    assert 0.17 < shares["loop"] < 0.33 and 0.17 < shares["beat"] < 0.33
    assert "breakbeat drum loop, 125 bpm" in caps
    assert drum_caption("rock", "room", 99.6) == "rock drum groove, room kit, 100 bpm"


def test_hand_percussion_captions_are_worded_several_ways_by_their_own_rng():
    """A hand-percussion groove's caption says "groove, hand percussion", "hand percussion
    loop" or "loop" (about half, a quarter, a quarter), always with its style and tempo, so the
    sonic-pi loop's "hand percussion loop" and a plain "samba loop" are phrases the grooves
    carry; without an rng, the first wording."""
    from lmdm_export.data.captions import hand_percussion_caption

    rng = np.random.default_rng(1)
    caps = [hand_percussion_caption("samba", 103.6, rng) for _ in range(400)]
    assert all(c.startswith("samba ") and c.endswith(", 104 bpm") for c in caps)
    counts = {c: caps.count(c) / len(caps) for c in set(caps)}
    assert set(counts) == {"samba groove, hand percussion, 104 bpm",
                           "samba hand percussion loop, 104 bpm", "samba loop, 104 bpm"}
    assert 0.4 < counts["samba groove, hand percussion, 104 bpm"] < 0.6
    assert 0.17 < counts["samba loop, 104 bpm"] < 0.33
    assert hand_percussion_caption("conga tumbao", 96.2) == \
        "conga tumbao groove, hand percussion, 96 bpm"


def test_hand_percussion_grooves_use_hand_keys_and_plan_under_their_label():
    """The hand styles sound only GM keys 54-81 (no kit drums, no crash opening a phrase),
    as two stems; the default corpus plans them as "percussion/<style>-<n>" pieces with the
    percussion label and both splits; an unknown style is refused by name."""
    from lmdm_export.data import default_config
    from lmdm_export.data.config import DrumSource
    from lmdm_export.data.drums import HAND_FILLS, HAND_STYLES, STYLES, bars_for, groove
    from lmdm_export.data.plan import plan_corpus

    assert len(HAND_STYLES) >= 6 and all(len(s) == 12 for f in HAND_FILLS for s in f.values())
    for name in HAND_STYLES:
        perf = groove(name, 110.0, bars_for(name, 110.0, 24.0), 0, np.random.default_rng(3))
        keys = {n.pitch for v in perf.voices for n in v.notes}
        assert keys and min(keys) >= 54 and 49 not in keys, (name, sorted(keys))
        assert {v.name for v in perf.voices} <= {"hand-drums", "percussion"}
        assert all(v.drums for v in perf.voices)
    config = default_config()
    jobs = [j for j in plan_corpus(config) if j.source == "percussion"]
    assert len(jobs) == len(HAND_STYLES) * config.percussion.patterns_per_style
    assert {j.style for j in jobs} == set(HAND_STYLES)
    assert all(j.piece_id.startswith("percussion/") for j in jobs)
    assert {v.label for j in jobs for v in j.variants} == {"percussion"}
    assert {j.split for j in jobs} == {"train", "val"}
    for job in jobs:
        (v,) = job.variants
        assert STYLES[job.style].bpm[0] <= v.bpm <= STYLES[job.style].bpm[1]
    with pytest.raises(ValueError, match="unknown groove style.*conga"):
        DrumSource(styles=("conga",))


def test_electronic_tracks_stay_in_key_on_the_grid_and_plan_under_their_label():
    """A track's pitched notes are in its key's scale, the bass plays chord roots (or their
    octave and fifth) in its register, every onset sits on the style's 16th grid (plus swing
    and the timing jitter), each 4-bar phrase carries the harmony, and the same seed gives the
    same track. The default corpus plans 20 tracks per style as "electronic/<style>-<n>" pieces,
    kind "electronic", label electronic, both splits; a kit style is refused as electronic."""
    from lmdm_export.data import default_config
    from lmdm_export.data.config import DataConfig, DrumSource
    from lmdm_export.data.drums import MACHINE_STYLES, STYLES, bars_for
    from lmdm_export.data.electronic import SCALES, TRACKS, chord, track
    from lmdm_export.data.plan import plan_corpus

    assert set(MACHINE_STYLES) == set(TRACKS) and len(TRACKS) >= 6
    assert chord(0, "minor") == (0, 3, 7) and chord(5, "minor") == (8, 12, 15)
    assert chord(4, "major") == (7, 11, 14)
    for name in MACHINE_STYLES:
        style = STYLES[name]
        bpm = sum(style.bpm) / 2
        bars = bars_for(name, bpm, 24.0)
        for seed, (tonic, mode) in enumerate(((9, "minor"), (2, "major"))):
            perf = track(name, bpm, bars, 25, tonic, mode, np.random.default_rng(seed),
                         timing_jitter_ms=0.0)
            again = track(name, bpm, bars, 25, tonic, mode, np.random.default_rng(seed),
                          timing_jitter_ms=0.0)
            assert perf == again
            scale = {(tonic + d) % 12 for d in SCALES[mode]}
            pitched = [v for v in perf.voices if not v.drums]
            assert {v.name for v in pitched} <= {"pad", "arp", "bass"} and pitched
            assert {n.pitch % 12 for v in pitched for n in v.notes} <= scale, (name, mode)
            step_s = 60.0 / bpm / style.steps
            for voice in perf.voices:
                for note in voice.notes:
                    grid = note.start / step_s
                    off = grid - np.floor(grid)
                    assert min(off, 1 - off, abs(off - style.swing)) < 1e-6, (name, voice.name)
            bass = [n for v in pitched if v.name == "bass" for n in v.notes]
            assert all(33 <= n.pitch <= 44 + 12 for n in bass)
            bar_s = style.beats * style.steps * step_s
            for phrase in range(bars // 4):
                lo, hi = phrase * 4 * bar_s, (phrase + 1) * 4 * bar_s - step_s
                assert any(lo <= n.start < hi for v in pitched if v.name != "bass"
                           for n in v.notes), (name, phrase)
    with pytest.raises(ValueError, match="machine style"):
        track("rock", 120.0, 8, 0, 0, "minor", np.random.default_rng(0))

    config = default_config()
    jobs = [j for j in plan_corpus(config) if j.source == "electronic"]
    assert len(jobs) == len(MACHINE_STYLES) * config.electronic.patterns_per_style
    assert {j.kind for j in jobs} == {"electronic"} and {j.style for j in jobs} == set(TRACKS)
    assert all(j.piece_id.startswith("electronic/") for j in jobs)
    assert {v.label for j in jobs for v in j.variants} == {"electronic"}
    assert {j.split for j in jobs} == {"train", "val"}
    assert {v.kit for j in jobs for v in j.variants} == {24, 25}
    with pytest.raises(ValueError, match="drum-machine styles.*rock"):
        DataConfig(soundfonts=config.soundfonts, electronic=DrumSource(styles=("rock",)))


def test_an_electronic_track_renders_with_its_stems_key_and_caption(tmp_path):
    """One rendered track: kind and label "electronic", the key in the record and caption,
    a stem per part (pad/arp/bass and the drum voices) summing to the mix (-40 dB, as for the
    other sources), and the source named in the data card."""
    _skip_without_renderer()
    from lmdm_export.data import load_config, render_corpus
    from lmdm_export.data.config import DrumSource
    from lmdm_export.data.records import read_jsonl, validate_record

    source = DrumSource(styles=("house",), patterns_per_style=1, bpm_range=(80.0, 140.0),
                        seconds_range=(8.0, 10.0), kits=(24,), label="electronic")
    config = dataclasses.replace(load_config(SMOKE), scores=(), drums=None, percussion=None,
                                 loops=None, electronic=source)
    summary = render_corpus(config, tmp_path)
    assert summary.failed_pieces == {} and summary.items == 1
    (record,) = read_jsonl(tmp_path / "metadata.jsonl")
    validate_record(record)
    assert (record["kind"], record["label"]) == ("electronic", "electronic")
    assert record["caption"].startswith("electronic house track in ")
    assert f"in {record['key']}, {round(record['tempo'])} bpm" in record["caption"]
    voices = {s["voice"] for s in record["stems"]}
    assert {"bass", "kick"} <= voices and voices & {"pad", "arp"}
    mix, _ = sf.read(tmp_path / record["path"])
    stems = np.sum([sf.read(tmp_path / s["path"])[0] for s in record["stems"]], axis=0)
    assert np.sqrt(np.mean((mix - stems) ** 2)) < 0.01 * np.sqrt(np.mean(mix ** 2))
    assert "lmdm_export.data.electronic" in (tmp_path / "DATA_CARD.md").read_text()


def test_only_cc0_files_of_a_dep5_file_are_listed(tmp_path):
    from lmdm_export.data.loops import cc0_files

    dep5 = tmp_path / "copyright"
    dep5.write_text("Files: *\nCopyright: x\nLicense: MIT\n\n"
                    "Files: etc/samples/loop_a.flac\nCopyright: 2013 A\n"
                    "Source: http://example.org/a\nLicense: CC0\n\n"
                    "Files: etc/samples/loop_b.flac\nCopyright: B\nLicense: CC-BY-SA-4.0\n")
    files = cc0_files(dep5)
    assert set(files) == {"loop_a.flac"}
    assert files["loop_a.flac"].source_url == "http://example.org/a"


def test_split_is_by_piece_and_deterministic():
    """Over the whole default plan: every item of a piece shares its split, and re-planning
    (or planning fewer pieces) assigns the same items the same way."""
    from lmdm_export.data import default_config
    from lmdm_export.data.plan import plan_corpus

    config = default_config()
    jobs = plan_corpus(config)
    assert len({j.piece_id for j in jobs}) == len(jobs)
    val = [j for j in jobs if j.split == "val"]
    assert 0.05 < len(val) / len(jobs) < 0.15
    items = {v.item_id: (j.piece_id, j.split, v) for j in jobs for v in j.variants}
    assert len(items) == sum(len(j.variants) for j in jobs)
    for job in plan_corpus(config, limit=3):
        for v in job.variants:
            assert items[v.item_id] == (job.piece_id, job.split, v)


# -- the rendered smoke corpus ---------------------------------------------------------------


def test_metadata_lines_validate_and_cover_every_source(smoke):
    from lmdm_export.data.records import validate_record

    config, out, summary, records = smoke
    assert summary.failed_pieces == {}
    assert len(records) == summary.items == summary.rendered == 8
    for record in records:
        validate_record(record)
    assert {r["kind"] for r in records} == {"score", "drums", "loop"}
    assert {r["label"] for r in records} == {"strings", "brass", "drums", "percussion"}
    assert (out / "DATA_CARD.md").read_text().count("CC0") >= 1


def test_audio_is_non_silent_at_the_configured_format(smoke):
    config, out, _, records = smoke
    for record in records:
        paths = [record["path"]] + [s["path"] for s in record["stems"]]
        for rel in paths:
            info = sf.info(out / rel)
            assert info.samplerate == config.sample_rate and info.channels == config.channels
            assert info.subtype == "PCM_16" and info.format == "FLAC"
        audio, _ = sf.read(out / record["path"])
        assert abs(record["duration"] - len(audio) / config.sample_rate) < 1e-6
        peak = np.abs(audio).max()
        assert 0.85 < peak <= 10 ** (config.peak_dbfs / 20) + 1e-3  # normalised to -1 dBFS
        assert np.sqrt(np.mean(audio ** 2)) > 0.01


def test_stems_are_aligned_with_and_sum_to_the_mix(smoke):
    """Tolerance: reverb and chorus are off (shared effects would leak every voice into the
    mix only), so the residual is fluidsynth's render-to-render variation of reused voices
    (-46 dB or better, see synth.py) plus 16-bit rounding of each file; the bound is -40 dB.
    A one-sample offset between stems and mix would leave a residual near the mix's level."""
    config, out, _, records = smoke
    multi = [r for r in records if len(r["stems"]) > 1]
    assert {r["kind"] for r in multi} == {"score", "drums"}
    for record in multi:
        mix, _ = sf.read(out / record["path"])
        stems = [sf.read(out / s["path"])[0] for s in record["stems"]]
        assert all(s.shape == mix.shape for s in stems)
        residual = mix - np.sum(stems, axis=0)
        rms = np.sqrt(np.mean(mix ** 2))
        assert np.sqrt(np.mean(residual ** 2)) < 0.01 * rms, record["id"]
        assert np.abs(residual).max() < 0.05
        shifted = mix[1:] - np.sum(stems, axis=0)[:-1]
        assert np.sqrt(np.mean(shifted ** 2)) > 10 * np.sqrt(np.mean(residual ** 2))
    voices = {s["voice"] for r in multi if r["kind"] == "score" for s in r["stems"]}
    assert voices == {"soprano", "alto", "tenor", "bass"}


def test_captions_carry_label_key_and_tempo(smoke):
    config, _, _, records = smoke
    phrases = {label.name: label.caption for label in config.labels} | {
        "drums": "drum", "percussion": "percussion"}
    for record in records:
        caption = record["caption"]
        assert phrases[record["label"]] in caption, caption
        assert f"{round(record['tempo'])} bpm" in caption
        if record["kind"] == "score":
            assert record["key"] and f"in {record['key']}" in caption
            assert record["transposition"] in range(-5, 7)
        else:
            assert record["key"] is None


def test_no_piece_in_both_splits(smoke):
    _, _, _, records = smoke
    splits: dict[str, set[str]] = {}
    for record in records:
        splits.setdefault(record["piece_id"], set()).add(record["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert {s for v in splits.values() for s in v} == {"train", "val"}  # val_fraction 0.5


def test_rerun_skips_and_an_interrupted_item_is_redone(smoke):
    from lmdm_export.data import render_corpus

    config, out, _, records = smoke
    stamps = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")}
    again = render_corpus(config, out)
    assert (again.rendered, again.skipped, again.items) == (0, 8, 8)
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")}

    victim = records[0]["id"]  # as if the run had died between its audio and its record
    (out / "records" / f"{victim}.json").unlink()
    resumed = render_corpus(config, out)
    assert (resumed.rendered, resumed.skipped, resumed.items) == (1, 7, 8)
    assert not list(out.rglob("*.tmp"))


def test_stereo_and_sample_rate_are_config_fields(tmp_path):
    _skip_without_renderer()
    from lmdm_export.data import load_config, render_corpus
    from lmdm_export.data.records import read_jsonl

    config = dataclasses.replace(load_config(SMOKE), sample_rate=16000, channels=2, scores=(),
                                 loops=None, percussion=None, audio_format="wav")
    summary = render_corpus(config, tmp_path)
    assert summary.items == 2
    for record in read_jsonl(tmp_path / "metadata.jsonl"):
        info = sf.info(tmp_path / record["path"])
        assert (info.samplerate, info.channels, info.format) == (16000, 2, "WAV")


def test_a_missing_soundfont_is_refused_before_anything_is_rendered(tmp_path):
    from lmdm_export.data import load_config, render_corpus
    from lmdm_export.data.config import SoundfontConfig

    absent = SoundfontConfig(name="absent", path=str(tmp_path / "absent.sf2"),
                             package="absent-soundfont")
    config = dataclasses.replace(load_config(SMOKE), soundfonts=(absent,))
    out = tmp_path / "corpus"
    with pytest.raises(FileNotFoundError, match="apt-get install absent-soundfont"):
        render_corpus(config, out)
    assert not out.exists()  # no piece was recorded as failed, so a re-run renders them all


def test_cli_main_renders_and_rejects_unknown_actions(tmp_path):
    _skip_without_renderer()
    import argparse

    from lmdm_export.data.cli import main
    from lmdm_export.data.records import read_jsonl

    args = argparse.Namespace(action="render", config=SMOKE, out=tmp_path, limit=1)
    assert main(args) == 0
    assert {r["kind"] for r in read_jsonl(tmp_path / "metadata.jsonl")} == {"score", "drums",
                                                                            "loop"}
    with pytest.raises(ValueError, match="unknown data action"):
        main(argparse.Namespace(action="burn", config=SMOKE, out=tmp_path, limit=None))
