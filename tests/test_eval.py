"""``lmdm-bridge eval``: the metrics on signals with known answers, the classifier on a corpus it
must separate, and ``eval run`` end to end on a random-weight bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from lmdm_bridge.cli import main as cli_main  # noqa: E402
from lmdm_export.eval.cli import parse_bundle  # noqa: E402
from lmdm_export.eval.clips import reference_sets, to_mono_rate  # noqa: E402
from lmdm_export.eval.frechet import frechet_distance  # noqa: E402
from lmdm_export.eval.report import markdown_report  # noqa: E402
from lmdm_export.eval.tonal import tonal_energy  # noqa: E402
from lmdm_export.train.corpus import read_items  # noqa: E402

RATE = 8000  # the synthetic corpus' rate: small clips keep the classifier fast


def test_tonal_energy_of_a_sine_is_near_one_and_of_white_noise_near_zero():
    t = np.arange(3 * RATE) / RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    noise = np.random.default_rng(0).standard_normal(3 * RATE)
    assert tonal_energy(np.sin(2 * np.pi * 440 * t)) > 0.99
    assert tonal_energy(chord) > 0.99
    assert tonal_energy(noise) < 0.03
    assert tonal_energy(np.zeros(3 * RATE)) == 0.0


def test_spectral_motion_is_still_for_a_held_chord_and_moves_with_notes_and_noise():
    from lmdm_export.eval.motion import spectral_motion

    t = np.arange(3 * RATE) / RATE
    held = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    # the same chord's notes one after another, 4 per second
    notes = np.sin(2 * np.pi * np.array((220.0, 277.2, 329.6))[(t * 4).astype(int) % 3] * t)
    noise = np.random.default_rng(0).standard_normal(3 * RATE) * 0.3
    still, moving, hiss = spectral_motion(np.stack([held, notes, noise]), RATE)
    assert still < 0.15  # what flickers within 60 dB of a steady chord's peak
    assert moving > 10 * still and hiss > 3 * still
    # a constant gain leaves every log-power difference as it was
    assert spectral_motion(0.1 * notes[None], RATE)[0] == pytest.approx(moving, rel=1e-3)


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16))
    b = rng.standard_normal((300, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    same = frechet_distance(a, b)
    shifted = frechet_distance(a, b + 1.0)  # mean term alone adds 16
    assert shifted > same + 10
    assert frechet_distance(a, 2 * b) > same + 5  # a wider spread costs too
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_downmix_and_resample_keep_duration_and_pitch():
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 441 * t)] * 2).astype(np.float32)
    mono = to_mono_rate(stereo, 44100, RATE)
    assert mono.shape == (RATE,)
    spectrum = np.abs(np.fft.rfft(mono[1000:-1000]))
    peak_hz = np.argmax(spectrum) * RATE / (len(mono) - 2000)
    assert peak_hz == pytest.approx(441, abs=2)


def _write_corpus(root: Path, seconds: float = 6.0) -> Path:
    """Two labels a classifier must separate: "sine" (random pitch) and "noise"; 4 train pieces
    of ``seconds`` and 2 val pieces of twice that each, every piece one FLAC."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    records = []
    for label in ("sine", "noise"):
        for k in range(6):
            split = "train" if k < 4 else "val"
            duration = seconds if split == "train" else 2 * seconds
            t = np.arange(int(duration * RATE)) / RATE
            if label == "sine":
                f0 = rng.uniform(150, 800)
                audio = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)
                caption = f"sine tone in {round(f0)} hz, 100 bpm"
            else:
                audio = 0.1 * rng.standard_normal(len(t))
                caption = f"white noise number {k}, 100 bpm"
            path = f"audio/{label}-{k}.flac"
            sf.write(str(root / path), audio.astype(np.float32), RATE)
            records.append({"id": f"{label}-{k}", "label": label, "caption": caption,
                            "split": split, "path": path, "duration": duration,
                            "piece_id": f"{label}/{k}", "sample_rate": RATE})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("eval") / "corpus")


@pytest.fixture(scope="module")
def classifier(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "classifier"
    code = cli_main(["eval", "classifier", "--corpus", str(corpus), "--out", str(out),
                     "--train-steps", "40"])
    assert code == 0
    return out


def test_reference_sets_are_disjoint_by_piece(corpus):
    items = [it for it in read_items(corpus, "val") if it.label == "sine"]
    a, b = reference_sets(items, 3 * RATE, 2)
    assert a.shape == b.shape == (2, 3 * RATE)
    # two val pieces: one for A, one for B, so no clip of A equals one of B
    assert not any(np.allclose(x, y) for x in a for y in b)


def test_classifier_separates_the_labels_on_held_out_pieces(classifier):
    report = json.loads((classifier / "report.json").read_text())
    assert (classifier / "classifier.pt").is_file()
    assert report["labels"] == ["noise", "sine"]
    assert report["steps"] == 40
    held = report["heldout"]
    assert held["accuracy"] >= 0.9
    assert held["labels_without_heldout"] == []
    assert set(held["per_label"]) == {"noise", "sine"}
    assert all(r["pieces"] == 2 for r in held["per_label"].values())


def test_a_step_budget_trains_the_same_classifier_whatever_the_clock(corpus, tmp_path):
    """``--train-steps``: exactly that many steps, the time budget ignored (a 6 ms one here),
    and two runs end with identical weights, so machines of any speed share the yardstick."""
    weights = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert cli_main(["eval", "classifier", "--corpus", str(corpus), "--out", str(out),
                         "--minutes", "0.0001", "--train-steps", "6"]) == 0
        assert json.loads((out / "report.json").read_text())["steps"] == 6
        weights.append(torch.load(out / "classifier.pt", weights_only=False))
    a, b = (w["state_dict"] for w in weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    from lmdm_export.bundle.writer import ExportRequest, export_bundle
    from lmdm_export.model.lmdm import LMDM
    from lmdm_export.presets import get_preset

    out = tmp_path_factory.mktemp("eval") / "tiny"
    export_bundle(LMDM(get_preset("tiny").config).eval(), out, ExportRequest(preset="tiny"),
                  progress=lambda m: None)
    return out


def test_eval_run_end_to_end_on_a_random_bundle(corpus, classifier, tiny_bundle, tmp_path):
    out = tmp_path / "eval"
    code = cli_main(["eval", "run", "--bundle", f"a={tiny_bundle}", "--bundle", f"b={tiny_bundle}",
                     "--classifier", str(classifier / "classifier.pt"),
                     "--corpus", str(corpus), "--out", str(out), "--clips", "2",
                     "--prompts", "1", "--stream-minutes", "0.1", "--segment-seconds", "3",
                     "--stream-labels", "sine", "--streams", "2", "--steps", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    ref = report["reference"]
    assert ref["clips"] == 4 and ref["split_per_label"] == {"noise": "val", "sine": "val"}
    for key in ("real_vs_real_fd", "noise_vs_real_fd", "tonal_energy_real", "motion_real",
                "motion_noise"):
        assert isinstance(ref[key], float) and np.isfinite(ref[key])
    assert ref["motion_noise"] > ref["motion_real"]  # noise against a sine and a noise label
    b = report["bundles"]["a"]
    assert 0.0 <= b["adherence"] <= 1.0
    assert set(b["adherence_per_label"]) == {"noise", "sine"}
    assert isinstance(b["fd"], float) and b["fd"] >= 0
    assert all(isinstance(v, float) for v in b["fd_per_label"].values())
    assert 0.0 <= b["tonal_energy"] <= 1.0
    assert b["motion"] > 0 and set(b["motion_per_label"]) == {"noise", "sine"}
    assert b["speed"]["realtime_factor"] > 0 and b["speed"]["realtime_factor_steady"] > 0
    codec = b["codec"]  # real B through the bundle's own (random) autoencoder
    assert 0.0 <= codec["adherence"] <= 1.0 and codec["fd"] >= 0
    assert codec["fd_ratio"] == pytest.approx(codec["fd"] / ref["real_vs_real_fd"])
    assert set(codec["fd_per_label"]) == {"noise", "sine"} and codec["motion"] > 0
    assert b["bundle"]["sample_rate"] == 44100 and b["bundle"]["audio_channels"] == 2
    assert b["bundle"]["steps"] == 2
    drift = b["drift"]
    assert drift["labels"] == ["sine"] and len(drift["segments"]) == 2
    assert all(0.0 <= s["adherence"] <= 1.0 for s in drift["segments"])
    # two 6 s streams from the label's one prompt, on two seeds: each 3 s segment pools a clip
    # of each, the "minute" is both whole streams
    assert drift["streams_per_label"] == 2 and len(drift["prompts"]["sine"]) == 2
    assert [s["clips_per_label"] for s in drift["segments"]] == [2, 2]
    assert drift["first_minute"]["clips_per_label"] == 4
    trend = drift["fd_trend"]  # two segments: a slope, but no error from an exact fit
    assert trend["segments"] == 2 and trend["standard_error"] is None
    fds = [s["fd"] for s in drift["segments"]]
    minutes = drift["segments"][1]["start"] / 60 - drift["segments"][0]["start"] / 60
    assert trend["slope_per_minute"] == pytest.approx((fds[1] - fds[0]) / minutes)
    assert trend["stream_bootstrap_error"] >= 0  # two streams to redraw
    assert "paired_trend" not in drift  # the first bundle is what the others pair with

    # two bundles side by side: one column pair each, and the drift comparison; b is the same
    # bundle, so its streams equal a's and every redrawn difference is zero
    assert report["bundles"]["b"]["drift"]["segments"] == drift["segments"]
    paired = report["bundles"]["b"]["drift"]["paired_trend"]
    assert paired["minus"] == "a" and paired["slope_per_minute"] == 0.0
    assert paired["stream_bootstrap_error"] == 0.0
    md = (out / "report.md").read_text()
    assert "first minute" in md and "2 0.1-minute streams per label" in md
    assert "| real B through a's codec |" in md and "a codec FD" in md
    assert "spectral motion" in md
    assert "| **a** |" in md and "| **b** |" in md
    assert "a adherence" in md and "b adherence" in md and "FD growth" in md
    redrawn = f"{trend['slope_per_minute']:+.2f} (± {trend['stream_bootstrap_error']:.2f})"
    assert f"a {redrawn}, b {redrawn}." in md and "over redrawn streams" in md
    assert "Paired against a" in md and "b - a +0.00 (± 0.00) (positive" in md

    # a report from before the redrawn-streams error (session 26) renders as it did
    for d in (drift, report["bundles"]["b"]["drift"]):
        d["fd_trend"].pop("stream_bootstrap_error")
        d.pop("paired_trend", None)
    md = markdown_report(report)
    assert f"a {trend['slope_per_minute']:+.2f}, b {trend['slope_per_minute']:+.2f}." in md
    assert "b - a +0.00 (positive" in md and "redrawn" not in md


def test_a_linear_trend_has_the_ols_slope_and_standard_error():
    """Against numpy's least-squares fit and its covariance (the textbook OLS error)."""
    from lmdm_export.eval.trend import linear_trend

    rng = np.random.default_rng(0)
    x = np.arange(10) * 0.5 + 0.25
    y = 70.0 + 1.5 * x + rng.normal(0.0, 5.0, 10)
    slope, error = linear_trend(list(x), list(y))
    fit, cov = np.polyfit(x, y, 1, cov="unscaled")
    residual = y - np.polyval(fit, x)
    assert slope == pytest.approx(fit[0])
    assert error == pytest.approx(np.sqrt(cov[0, 0] * (residual ** 2).sum() / 8))
    assert linear_trend([0.0, 2.0], [1.0, 5.0]) == (2.0, None)
    with pytest.raises(ValueError, match="two distinct x"):
        linear_trend([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 points"):
        linear_trend([1.0], [1.0])


def _wandering_streams(rng, n: int, segments: int, per_segment: int, dim: int = 3):
    """``n`` streams of ``segments * per_segment`` standard-normal embeddings whose mean walks
    away along the first axis at a rate of its own per stream (drawn from N(0, 1) per segment):
    each stream drifts, the streams do not agree on how much."""
    clips = segments * per_segment
    out = []
    for _ in range(n):
        e = rng.normal(size=(clips, dim))
        e[:, 0] += rng.normal() * (np.arange(clips) // per_segment)
        out.append(e)
    return out


def test_the_redrawn_streams_error_measures_how_far_another_draw_of_streams_moves_the_trend():
    """The segments' FDs of a few wandering streams share those streams, so their OLS error
    misses what another draw of streams would change; the bootstrap over streams comes within a
    factor of two of the real spread between independent draws (measured here over 40; with four
    streams it runs low, by sqrt(3/4) from the resampling alone)."""
    from lmdm_export.eval.run import _fd
    from lmdm_export.eval.trend import linear_trend, stream_bootstrap_error

    rng = np.random.default_rng(0)
    segments, per_segment, clip_seconds = 6, 20, 3.0
    real = {"x": rng.normal(size=(per_segment * 4, 3))}
    x = [(j + 0.5) * per_segment * clip_seconds / 60 for j in range(segments)]
    slopes, ols, redrawn = [], [], []
    for _ in range(40):
        streams = {"x": _wandering_streams(rng, 4, segments, per_segment)}
        fds = [_fd([e[j * per_segment:(j + 1) * per_segment] for e in streams["x"]], [real["x"]])
               for j in range(segments)]
        slope, error = linear_trend(x, fds)
        slopes.append(slope)
        ols.append(error)
        redrawn.append(stream_bootstrap_error(streams, real, per_segment, clip_seconds, reps=50))
    spread = np.std(slopes, ddof=1)
    assert 0.5 * spread < np.mean(redrawn) < 2.0 * spread
    assert np.mean(ols) < 0.5 * spread  # the OLS error understates it


def test_the_redrawn_streams_error_is_zero_without_a_difference_and_none_without_streams():
    from lmdm_export.eval.trend import stream_bootstrap_error

    rng = np.random.default_rng(1)
    real = {"x": rng.normal(size=(30, 3)), "y": rng.normal(size=(30, 3))}
    streams = {lab: _wandering_streams(rng, 3, 4, 10) for lab in ("x", "y")}
    error = stream_bootstrap_error(streams, real, 10, 3.0, reps=20, seed=3)
    assert error > 0 and error == stream_bootstrap_error(streams, real, 10, 3.0, reps=20, seed=3)
    # paired with itself: every redraw's segments cancel
    assert stream_bootstrap_error(streams, real, 10, 3.0, minus=streams, reps=20) == 0.0
    same = {lab: [runs[0]] * 3 for lab, runs in streams.items()}  # every draw the same streams
    assert stream_bootstrap_error(same, real, 10, 3.0, reps=20) == pytest.approx(0.0, abs=1e-9)
    one = {lab: runs[:1] for lab, runs in streams.items()}
    assert stream_bootstrap_error(one, real, 10, 3.0) is None  # nothing to redraw
    assert stream_bootstrap_error(streams, real, 25, 3.0) is None  # one segment: no trend


def test_bundle_arguments_take_an_optional_name():
    assert parse_bundle("arc=runs/arc/bundle") == ("arc", "runs/arc/bundle")
    assert parse_bundle("runs/lmdm/bundle") == ("bundle", "runs/lmdm/bundle")


def test_eval_run_names_an_unknown_label(corpus, classifier, tiny_bundle, tmp_path, capsys):
    code = cli_main(["eval", "run", "--bundle", str(tiny_bundle), "--classifier",
                     str(classifier / "classifier.pt"), "--corpus", str(corpus), "--out",
                     str(tmp_path), "--labels", "sine,kazoo", "--stream-minutes", "0"])
    assert code == 2
    assert "kazoo" in capsys.readouterr().err


def test_eval_run_names_too_little_real_audio_for_the_drift_streams(corpus, classifier,
                                                                      tiny_bundle, tmp_path,
                                                                      capsys):
    """Three 6 s streams need 6 real clips per reference set; each val piece gives 4."""
    code = cli_main(["eval", "run", "--bundle", str(tiny_bundle), "--classifier",
                     str(classifier / "classifier.pt"), "--corpus", str(corpus), "--out",
                     str(tmp_path), "--labels", "sine", "--stream-labels", "sine",
                     "--stream-minutes", "0.1", "--streams", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "sine 4 of 6" in err and "fewer --streams" in err
    assert not (tmp_path / "report.json").exists()


def test_eval_codec_splits_the_codecs_cost(corpus, classifier, tmp_path):
    """A tiny peak-locked codec trained for a few steps on the synthetic corpus: the STFT
    round trip is exact, so it scores real-vs-real; the codec costs more than that."""
    from lmdm_export.model.stft_codec import StftCodecConfig
    from lmdm_export.train.codec import CodecTrainConfig
    from lmdm_export.train.codec import train as train_codec

    codec = StftCodecConfig(sample_rate=RATE, latent_dim=4, n_fft=64, hop=16, downsamples=1,
                            encoder_width=16, encoder_blocks=1, decoder_width=16,
                            decoder_latent_blocks=1, decoder_frame_blocks=1,
                            phase="peak-locked", linear_path=True)
    train_codec(CodecTrainConfig(corpus=str(corpus), out=str(tmp_path / "codec"), codec=codec,
                                 steps=3, batch=2, crop_frames=16, warmup=1, val_every=3,
                                 loss_resolutions=(64, 128), kl_weight=0.0,
                                 sample_latents=False, val_clips=2, val_frames=16,
                                 stats_clips=4, linear_fit_clips=6))
    out = tmp_path / "ceiling"
    code = cli_main(["eval", "codec", "--codec", str(tmp_path / "codec" / "release.pt"),
                     "--classifier", str(classifier / "classifier.pt"), "--corpus", str(corpus),
                     "--out", str(out), "--clips", "2", "--phase-iterations", "1"])
    assert code == 0
    report = json.loads((out / "codec.json").read_text())
    ways = report["ways"]
    assert list(ways) == ["stft_round_trip", "peak_locked_phase", "codec_magnitudes", "codec",
                          "peak_locked_phase+gl1", "codec+gl1"]
    assert ways["codec+gl1"]["fd"] != ways["codec"]["fd"]  # the refinement changed the audio
    assert ways["stft_round_trip"]["fd"] == pytest.approx(report["real_vs_real_fd"], rel=0.05)
    assert ways["codec"]["fd"] > ways["stft_round_trip"]["fd"]
    assert set(ways["codec"]["fd_per_label"]) == {"noise", "sine"}
    # the round trip is exact, so its clips move as real set B's do
    assert ways["stft_round_trip"]["motion"] == pytest.approx(report["motion_real"], rel=0.02)

    # --calibrate: the decoders are calibrated on the corpus first; the rows that never pass
    # through the decoder stay as they were, the codec's change
    calibrated = tmp_path / "calibrated"
    code = cli_main(["eval", "codec", "--codec", str(tmp_path / "codec" / "release.pt"),
                     "--classifier", str(classifier / "classifier.pt"), "--corpus", str(corpus),
                     "--out", str(calibrated), "--clips", "2", "--phase-iterations", "1",
                     "--calibrate", str(corpus)])
    assert code == 0
    report = json.loads((calibrated / "codec.json").read_text())
    assert report["config"]["calibrate"] == str(corpus)
    for way in ("stft_round_trip", "peak_locked_phase", "peak_locked_phase+gl1"):
        assert report["ways"][way]["fd"] == pytest.approx(ways[way]["fd"], rel=1e-6)
    for way in ("codec", "codec+gl1"):
        assert report["ways"][way]["fd"] != pytest.approx(ways[way]["fd"], rel=1e-6)


def test_eval_codec_names_a_missing_codec(tmp_path, capsys):
    code = cli_main(["eval", "codec", "--codec", str(tmp_path / "none.pt")])
    assert code != 0
    assert "no codec release" in capsys.readouterr().err
