"""``lmdm-bridge verify``: the torch model and the bundle side by side.

1. every graph of the bundle in onnxruntime against its torch module on the same inputs;
2. for each streaming pattern, the runtime :class:`~lmdm_bridge.engine.Engine` (tokenizer, text
   encoder, conditioning and DiT graphs, numpy samplers, CFG) against the torch rollout for
   several blocks, the torch side replaying the engine's noise draw for draw;
3. the decoded audio of the engine's latents, ORT decoder against the torch autoencoder.

Errors are relative: max |a - b| / max(1, max |b|). Tolerances depend on the bundle's dtype:
fp32 only differs by kernel rounding; fp16 and int8 report what their precision costs.

A stateful (peak-locked) decoder derives its phase from the positions of spectral peaks and
sums it over frames, so a quantized decoder that moves one peak by a bin sends that partial's
phase on another course: its waveform decorrelates from torch's while its spectrum stays put.
For such a decoder in a reduced precision, the decoded audio is compared by STFT magnitude
(spectral convergence, :func:`_spectral_relative`) and the phases are not compared; fp32 keeps
the sample-wise check, phases included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from lmdm_bridge.decode import is_stateful, whole_decode_feeds
from lmdm_bridge.engine import Engine
from lmdm_bridge.manifest import Manifest, read_manifest
from lmdm_export.bundle.graphs import DIT_GRAPHS
from lmdm_export.bundle.writer import _examples
from lmdm_export.checkpoint import load_checkpoint
from lmdm_export.eval.tonal import power_spectrogram
from lmdm_export.model.lmdm import LMDM
from lmdm_export.model.oobleck import fold_weight_norm
from lmdm_export.release import (
    decoder_digest,
    is_release,
    load_release_model,
    replace_decoder,
    set_calibration,
    set_phase_iterations,
)
from lmdm_export.rollout import Guidance, make_conditioning, make_session, stream_blocks
from lmdm_export.sampling import SAMPLERS, logsnr_schedule

# (per graph, per stream, decoded audio) relative tolerances by bundle dtype.
# fp32 differs only by kernel rounding (observed ~1e-6). fp16 and int8 trade precision for speed;
# their tolerances catch a broken graph (NaN, a wrong input order: errors of order 1 and more)
# while the printed figure is what the precision costs. int8 on random-init weights is a worst
# case: unstructured weights quantize badly (observed ~0.2-0.5 per graph, ~0.1 per stream).
TOLERANCES = {"fp32": (1e-4, 1e-3, 1e-3), "fp16": (5e-2, 2e-1, 2e-1),
              "int8": (5e-1, 5e-1, 5e-1), "int8-all": (5e-1, 5e-1, 5e-1)}
PROMPT = "verification chorale"


@dataclass(frozen=True)
class Check:
    name: str
    error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.tolerance


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # fp16 graphs on CPU log every op without a half kernel
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_model(bundle: Path, checkpoint: Path | None = None, model_config: Path | None = None,
                text_encoder_dirs: dict[str, str] | None = None) -> LMDM:
    """The torch model of a bundle: its ``source/`` weights, or a checkpoint given."""
    if checkpoint is None:
        source = bundle / "source"
        if (source / "release.pt").is_file():
            return load_release_model(source / "release.pt")[0]
        if not (source / "model.safetensors").is_file():
            raise FileNotFoundError(f"{bundle} has no source/ weights (exported with "
                                    "--no-source-weights): pass --checkpoint")
        return load_checkpoint(source / "model_config.json", source / "model.safetensors",
                               text_encoder_dirs=text_encoder_dirs)
    if is_release(checkpoint):
        return load_release_model(checkpoint)[0]
    return load_checkpoint(model_config or checkpoint.parent / "model_config.json", checkpoint,
                           text_encoder_dirs=text_encoder_dirs)


def _spectral_relative(a: np.ndarray, b: np.ndarray, n_fft: int = 1024) -> float:
    """Spectral convergence || |A| - |B| ||_F / || |B| ||_F of audio ``(..., samples)``: Hann
    frames of ``n_fft`` (one zero-padded frame for shorter audio), hop n_fft / 4."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")

    def magnitude(x: np.ndarray) -> np.ndarray:
        return np.stack([np.sqrt(power_spectrogram(c, n_fft, n_fft // 4))
                         for c in x.reshape(-1, x.shape[-1])])

    ma, mb = magnitude(a), magnitude(b)
    return float(np.linalg.norm(ma - mb) / max(np.linalg.norm(mb), 1e-12))


def _by_spectrum(manifest: Manifest) -> bool:
    """Whether decoded audio is compared by STFT magnitude (see the module docstring)."""
    return manifest.dtype != "fp32" and is_stateful(manifest.graph("vae_decoder"))


def check_graphs(model: LMDM, bundle: Path, manifest: Manifest, tolerance: float) -> list[Check]:
    folded = LMDM(model.config)
    folded.load_state_dict(model.state_dict())
    fold_weight_norm(folded.autoencoder)
    checks = []
    for role, (module, args, _) in _examples(folded.eval()).items():
        if role not in manifest.graphs:
            continue
        spec = manifest.graphs[role]
        session = _session(bundle / spec.file)
        got = session.run(None, {i.name: a.numpy() for i, a in zip(spec.inputs, args,
                                                                    strict=True)})
        with torch.no_grad():
            want = module(*args)
        want = want if isinstance(want, tuple) else (want,)
        want = [w.numpy() for w in want]
        if role == "vae_decoder" and _by_spectrum(manifest):
            audio = [o.name for o in spec.outputs].index("audio")
            checks.append(Check(f"graph {role} (STFT magnitude)",
                                _spectral_relative(got[audio], want[audio]), tolerance))
            continue
        for i, out in enumerate(spec.outputs):
            if out.name == "phases":  # angles: pi and -pi are the same phase
                got[i] = want[i] + np.remainder(got[i] - want[i] + np.pi, 2 * np.pi) - np.pi
        error = max(_relative(g, w) for g, w in zip(got, want, strict=True))
        checks.append(Check(f"graph {role}", error, tolerance))
    return checks


class _Recorder:
    """The engine's noise source, keeping every draw for the torch side to replay."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.draws: list[np.ndarray] = []

    def __call__(self, shape: tuple[int, ...]) -> np.ndarray:
        draw = self.rng.standard_normal(shape, dtype=np.float32)
        self.draws.append(draw)
        return draw

    def replay(self) -> Callable[[tuple, torch.Tensor], torch.Tensor]:
        draws = iter(self.draws)

        def noise(shape: tuple, like: torch.Tensor) -> torch.Tensor:
            draw = next(draws)
            if tuple(draw.shape) != tuple(shape):
                raise AssertionError(f"noise order differs: the engine drew {draw.shape}, the "
                                     f"torch rollout asks for {tuple(shape)}")
            return torch.from_numpy(draw).to(like)

        return noise


def check_stream(model: LMDM, bundle: Path, manifest: Manifest, method: str, blocks: int,
                 tolerances: tuple[float, float]) -> list[Check]:
    sampler = manifest.sampler
    cfg = 3.0
    recorder = _Recorder(seed=1)
    engine = Engine(bundle, method=method, cfg_scale=cfg, noise=recorder, providers="cpu")
    engine.set_prompt(PROMPT)
    ours = np.stack([engine.next_block() for _ in range(blocks)], axis=0)
    ours = np.concatenate(list(ours), axis=-1)[None]
    numbers = {k: v[2] for k, v in manifest.numbers.items()}
    metadata = [{manifest.text.conditioner_id: PROMPT, **numbers}]
    guidance = Guidance(scale=cfg, interval=engine.cfg_interval)  # the manifest's interval
    with torch.inference_mode():
        cross, glob = model.conditioning_inputs(metadata)
        cond = make_conditioning(model.dit, cross, glob, guidance)
        noise = recorder.replay()
        session = make_session(method, model.dit, model.config, cond, guidance=guidance,
                               generator=noise)
        ts = logsnr_schedule(engine.steps, logsnr_min=sampler.logsnr_min,
                             logsnr_max=sampler.logsnr_max)
        theirs = torch.cat(list(stream_blocks(session, blocks, sampler=SAMPLERS[engine.sampler],
                                              ts=ts, generator=noise,
                                              cfg_pp=engine.cfg_pp)), dim=-1)
        # Both decoders get the engine's latents, so this check measures the decoder alone;
        # how far those latents are from torch's is the stream check's figure.
        audio_torch = model.autoencoder.decode(torch.from_numpy(ours).to(theirs)).numpy()
    decoder = _session(bundle / manifest.graph("vae_decoder").file)
    audio_ort = decoder.run(None, whole_decode_feeds(manifest.graph("vae_decoder"), ours))[0]
    if _by_spectrum(manifest):
        audio = Check(f"decoded audio {method} (STFT magnitude)",
                      _spectral_relative(audio_ort, audio_torch), tolerances[1])
    else:
        audio = Check(f"decoded audio {method}", _relative(audio_ort, audio_torch),
                      tolerances[1])
    return [Check(f"stream {method} ({blocks} blocks, CFG {cfg:g})",
                  _relative(ours, theirs.numpy()), tolerances[0]), audio]


def verify(bundle: Path, *, checkpoint: Path | None = None, model_config: Path | None = None,
           text_encoder_dirs: dict[str, str] | None = None, blocks: int = 4,
           codec: Path | None = None,
           progress: Callable[[str], None] = lambda m: None) -> list[Check]:
    """Every check of ``bundle`` against its torch model (``source/`` or ``checkpoint``, with
    the decoder of the codec release ``codec`` when it was exported with ``--codec``)."""
    manifest = read_manifest(bundle)
    graph_tol, stream_tol, audio_tol = TOLERANCES[manifest.dtype]
    model = torch_model(bundle, checkpoint, model_config, text_encoder_dirs)
    if codec is not None:
        replace_decoder(model, codec)
    if manifest.model.get("calibration") is not None:  # fitted at export (--calibrate)
        set_calibration(model, manifest.model["calibration"])
    expected = manifest.model.get("decoder_digest")
    if expected is not None and decoder_digest(model) != expected:
        raise ValueError(f"{bundle} decodes with another codec decoder than the torch model "
                         f"({'--codec ' + str(codec) if codec else 'its checkpoint'}): pass "
                         "the codec release it was exported with as --codec")
    iterations = manifest.model.get("phase_iterations")
    if iterations is not None and model.autoencoder.config.phase_iterations != iterations:
        set_phase_iterations(model, iterations)  # a training release, exported with the option
    checks = check_graphs(model, bundle, manifest, graph_tol)
    for check in checks:
        progress(_line(check))
    for method in ("block-causal", "enc-dec"):
        roles = [r for r in DIT_GRAPHS if r.startswith("bc_" if method == "block-causal"
                                                          else "ed_")]
        if all(r in manifest.graphs for r in roles):
            for check in check_stream(model, bundle, manifest, method, blocks,
                                      (stream_tol, audio_tol)):
                checks.append(check)
                progress(_line(check))
    return checks


def _line(check: Check) -> str:
    return (f"{'ok  ' if check.ok else 'FAIL'} {check.name:<44} max rel error "
            f"{check.error:.2e} (tolerance {check.tolerance:.0e})")
