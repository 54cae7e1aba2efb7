"""Write a bundle: ONNX graphs with the KV cache as inputs/outputs, shared weights, manifest.

The export runs in a temporary folder beside the target and is renamed into place at the end,
so an interrupted export leaves no half-written bundle; an existing bundle is replaced only with
``force``. Graph weights are de-duplicated by content into one ``weights.bin`` that every graph
references as ONNX external data: the six DiT graphs share one copy of the DiT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

from lmdm_bridge import __version__
from lmdm_bridge.decode import RECEPTIVE_FRAMES
from lmdm_bridge.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    Control,
    Geometry,
    GraphSpec,
    Manifest,
    SamplerDefaults,
    TensorSpec,
    TextSpec,
    describe_cfg_interval,
    sha256_file,
)
from lmdm_export.bundle.graphs import (
    DIT_GRAPHS,
    ConditioningGraph,
    GraphIO,
    TextEncoderGraph,
    VAEDecoderGraph,
    VAEEncoderGraph,
)
from lmdm_export.checkpoint import save_weights, to_sat_config
from lmdm_export.model.lmdm import LMDM
from lmdm_export.model.oobleck import fold_weight_norm
from lmdm_export.model.stft_codec import StftCodec
from lmdm_export.model.text_encoders import FrozenTextConditioner
from lmdm_export.release import decoder_digest, release_payload

DTYPES = ("fp32", "fp16", "int8", "int8-all")
OPSET = 18
WEIGHTS = "weights.bin"
EXAMPLE_BATCH = 2  # CFG runs the conditional and unconditional branch as one batch
_MIN_EXTERNAL_BYTES = 1024
_ONNX_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16",
                TensorProto.INT64: "int64", TensorProto.INT32: "int32", TensorProto.BOOL: "bool"}

Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ExportRequest:
    dtype: str = "fp32"
    source: str = "random-init"
    preset: str | None = None
    include_source_weights: bool = True
    sampler: SamplerDefaults = SamplerDefaults()

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype!r} is not one of {DTYPES}")


def _text_conditioner(model: LMDM) -> tuple[str, FrozenTextConditioner]:
    texts = [(cid, m) for cid, m in model.conditioner.conditioners.items()
             if isinstance(m, FrozenTextConditioner)]
    if len(texts) != 1:
        raise ValueError(f"a bundle needs exactly one text conditioner, the model has {len(texts)}")
    return texts[0]


def _examples(model: LMDM) -> dict[str, tuple[torch.nn.Module, tuple, dict[str, int]]]:
    """Every graph with example inputs (random values, the shapes of a valid call) and the
    example dims the manifest records."""
    cfg = model.config
    dit, stream, ae = cfg.dit, cfg.stream, cfg.autoencoder
    b, s, c = EXAMPLE_BATCH, stream.context_frames, stream.block_frames
    gen = torch.Generator().manual_seed(0)
    cid, text = _text_conditioner(model)
    tc = cfg.conditioning.num_cross_attention_tokens

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    kv_shape = (dit.depth, b, dit.num_heads)
    cond = (rand(*kv_shape, tc, dit.head_dim), rand(*kv_shape, tc, dit.head_dim),
            rand(b, dit.embed_dim))
    cache = (rand(*kv_shape, s, dit.head_dim), rand(*kv_shape, s, dit.head_dim))
    add_ch = dit.input_add_channels

    def window(frames):
        return rand(b, dit.io_channels, frames), rand(b, add_ch, frames), torch.rand(b)

    ids = torch.randint(0, 1000, (b, text.max_length), generator=gen)
    mask = torch.ones(b, text.max_length, dtype=torch.int64)
    conditioning = ConditioningGraph(model)
    cond_inputs = tuple(rand(b, text.max_length, cfg.conditioning.cond_dim) if i == cid
                        else torch.rand(b, generator=gen) * 20 for i in conditioning.ids)
    batch = {"batch": b}
    graphs = {
        "text_encoder": (TextEncoderGraph(text), (ids, mask), batch),
        "conditioning": (conditioning, (*cond_inputs, torch.ones(b)), batch),
        "bc_bootstrap": (DIT_GRAPHS["bc_bootstrap"](model), (*window(s + c), *cond), batch),
        "bc_fused": (DIT_GRAPHS["bc_fused"](model), (*window(2 * c), *cond, *cache), batch),
        "bc_cached": (DIT_GRAPHS["bc_cached"](model), (*window(c), *cond, *cache), batch),
        "ed_prefill": (DIT_GRAPHS["ed_prefill"](model), (*window(s)[:2], *cond[:2]), batch),
        "ed_decoder": (DIT_GRAPHS["ed_decoder"](model), (*window(c), *cond, *cache), batch),
        "outpaint": (DIT_GRAPHS["outpaint"](model), (*window(s + c), *cond), batch),
        "vae_decoder": _decoder_example(model, rand(1, ae.latent_dim, c)),
        "vae_encoder": (VAEEncoderGraph(model),
                        (rand(1, ae.audio_channels, c * ae.downsampling_ratio),),
                        {"batch": 1, "samples": c * ae.downsampling_ratio}),
    }
    return graphs


def _decoder_example(model: LMDM, latents: torch.Tensor) -> tuple:
    """The decoder graph, its example arguments and dims; a peak-locked codec's graph also
    takes the phase at a given STFT frame (see :class:`VAEDecoderGraph`)."""
    graph = VAEDecoderGraph(model)
    frames = latents.shape[-1]
    if not graph.stateful:
        return graph, (latents,), {"batch": 1, "frames": frames}
    cfg = model.autoencoder.config
    phase = torch.zeros(1, cfg.audio_channels * cfg.bins)
    return graph, (latents, phase, torch.zeros(1, dtype=torch.int64)), \
        {"batch": 1, "frames": frames, "spectral_frames": frames * cfg.frames_per_latent}


def _dynamic_axes(role: str, io: GraphIO) -> dict[str, dict[int, str]]:
    axes = {}
    for name in io.inputs + io.outputs:
        if name == "phase_frame":  # one index, whatever the batch
            axes[name] = {}
            continue
        axes[name] = {1 if name.startswith(("cross_k", "cross_v", "cache_", "new_cache_")) else 0:
                      "batch"}
    if role == "vae_decoder":
        axes["latents"][2] = "frames"
        axes["audio"][2] = "samples"
        if "phases" in axes:
            axes["phases"][2] = "spectral_frames"
    if role == "vae_encoder":
        axes["audio"][2] = "samples"
        axes["latents"][2] = "frames"
    return axes


def _export_graph(role: str, module: torch.nn.Module, args: tuple, path: Path) -> None:
    io: GraphIO = module.io
    axes = _dynamic_axes(role, io)
    # The tracer warns about every Python-side shape check it freezes into the graph; the
    # geometry is fixed per graph by design, and `verify` checks the graphs numerically.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(module.eval(), args, str(path), input_names=list(io.inputs),
                          output_names=list(io.outputs), dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    _declare_output_shapes(path, outputs, axes)


def _declare_output_shapes(path: Path, outputs: tuple, axes: dict[str, dict[int, str]]) -> None:
    """The tracer names output dims after the ops that made them; declare the real shapes
    (fixed by the geometry, or the named dynamic dims) so hosts can preallocate."""
    model = onnx.load(str(path))
    for value, tensor in zip(model.graph.output, outputs, strict=True):
        dims = value.type.tensor_type.shape.dim
        named = axes.get(value.name, {})
        for i, size in enumerate(tensor.shape):
            dims[i].Clear()
            if i in named:
                dims[i].dim_param = named[i]
            else:
                dims[i].dim_value = size
    onnx.save(model, str(path))


def _convert(role: str, path: Path, dtype: str) -> None:
    """int8: dynamic quantization of the DiT's matrix products (the CPU lever); int8-all: also
    the text encoder's (matrix products and embedding table) and the VAE's, for a compact
    bundle to ship; fp16: every float weight and activation in half precision, inputs and
    outputs kept float32."""
    # The conditioning graph runs once per prompt and is small: int8 would cost precision
    # (its projections set the whole stream's prompt) and buy neither speed nor size.
    if (dtype == "int8" and role in DIT_GRAPHS) or (dtype == "int8-all" and
                                                    role != "conditioning"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        text = role == "text_encoder"
        ops = ["MatMul", "Gemm", "Gather"] if text else ["MatMul", "Gemm"]
        quantized = path.with_suffix(".int8.onnx")
        # The text encoder's weights get a scale per output channel: with one scale per matrix
        # the prompt embeddings moved enough to cost the default model 6 points of prompt
        # adherence (85 % against 91 % with fp32 text, `eval run`, 120 clips); per channel
        # matches fp32 at the same size. The DiT and the VAE lose nothing measurable per tensor.
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8,
                         op_types_to_quantize=ops, per_channel=text)
        quantized.replace(path)
    if dtype == "int8-all":
        model = onnx.load(str(path))
        _store_half(model)
        onnx.save(model, str(path))
    elif dtype == "fp16" and role != "text_encoder":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        onnx.save(model, str(path))


# Trained float weights at least this large that quantization left in float32 (convolutions,
# the codec's linear path) are stored in half precision by int8-all.
_HALF_STORAGE_ELEMENTS = 65536


def _store_half(model: onnx.ModelProto) -> None:
    """Store large trained float32 initializers as float16 followed by a Cast back to float32.

    Compute stays float32 (ORT folds the Cast once, at session start); only the file shrinks.
    Half precision keeps about 11 significant bits, a relative error below 5e-4 (-66 dB), far
    finer than the training noise of the weights it rounds. Large constants the graph computes
    with rather than learned (the STFT codec's DFT bases) become initializers too, so the shared
    weights file holds them once for all graphs, but stay float32: a basis rounded to -66 dB
    leaks every partial into the quiet bins around it, where the codec reads and writes
    log-magnitudes down to -100 dB. Rounding them cost the default bundle's codec 8 points of
    Fréchet distance (real clips through it: 23.3 against 31.1; `eval run`'s codec row).
    """
    graph = model.graph
    computed = set()
    for node in list(graph.node):  # large Constant nodes (e.g. the STFT bases) -> initializers
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and \
                int(np.prod(value.dims)) >= _HALF_STORAGE_ELEMENTS:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value), node.output[0])
            graph.initializer.append(tensor)
            graph.node.remove(node)
            computed.add(tensor.name)
    for i, tensor in enumerate(list(graph.initializer)):
        if tensor.data_type != TensorProto.FLOAT or tensor.name in computed or \
                int(np.prod(tensor.dims)) < _HALF_STORAGE_ELEMENTS:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                       f"{tensor.name}__fp16")
        graph.initializer.remove(tensor)
        graph.initializer.append(half)
        graph.node.insert(0, onnx.helper.make_node(
            "Cast", [half.name], [tensor.name], name=f"store_half_{i}", to=TensorProto.FLOAT))


class _SharedWeights:
    """Appends each distinct initializer once to one file and points graphs at it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.offsets: dict[str, tuple[int, int]] = {}

    def externalize(self, model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer:
            data = numpy_helper.to_array(tensor).tobytes()
            if len(data) < _MIN_EXTERNAL_BYTES:
                continue
            key = hashlib.sha256(data).hexdigest()
            if key not in self.offsets:
                # 64-byte alignment lets onnxruntime map the tensors in place.
                pad = (-self.file.tell()) % 64
                self.file.write(b"\0" * pad)
                self.offsets[key] = (self.file.tell(), len(data))
                self.file.write(data)
            offset, length = self.offsets[key]
            dims, dtype, name = list(tensor.dims), tensor.data_type, tensor.name
            tensor.Clear()
            tensor.name, tensor.data_type = name, dtype
            tensor.dims.extend(dims)
            tensor.data_location = TensorProto.EXTERNAL
            for k, v in (("location", self.path.name), ("offset", str(offset)),
                         ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = k, v

    def close(self) -> None:
        self.file.close()


def _tensor_specs(values) -> tuple[TensorSpec, ...]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
        specs.append(TensorSpec(v.name, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), shape))
    return tuple(specs)


def _model_info(model: LMDM, request: ExportRequest) -> dict:
    """The manifest's ``model``: where the weights came from and, for an STFT codec, the
    decode-time settings its ``vae_decoder`` graph was built with (phase iterations, spectral
    calibration) and the digest of its decoder's weights (``verify`` rebuilds the torch side with
    them when given the training release, and refuses a torch model with another decoder)."""
    info = {"preset": request.preset, "source": request.source,
            "dit_parameters": sum(p.numel() for p in model.dit.parameters())}
    if isinstance(model.autoencoder, StftCodec):
        info["phase_iterations"] = model.autoencoder.config.phase_iterations
        calibration = model.autoencoder.decoder.calibration
        if calibration.any():  # `export --calibrate`: verify applies it to a training release
            info["calibration"] = calibration.tolist()
        info["decoder_digest"] = decoder_digest(model)
    return info


def _geometry(model: LMDM, text: FrozenTextConditioner) -> Geometry:
    cfg = model.config
    return Geometry(
        sample_rate=cfg.autoencoder.sample_rate, audio_channels=cfg.autoencoder.audio_channels,
        latent_channels=cfg.dit.io_channels, downsampling_ratio=cfg.autoencoder.downsampling_ratio,
        context_frames=cfg.stream.context_frames, block_frames=cfg.stream.block_frames,
        layers=cfg.dit.depth, heads=cfg.dit.num_heads, head_dim=cfg.dit.head_dim,
        embed_dim=cfg.dit.embed_dim, cond_tokens=cfg.conditioning.num_cross_attention_tokens,
        cond_dim=cfg.conditioning.cond_dim, text_tokens=text.max_length,
        decoder_receptive_frames=getattr(cfg.autoencoder, "receptive_frames", RECEPTIVE_FRAMES))


def _controls(model: LMDM) -> tuple[Control, ...]:
    controls, offset = [], 0
    for group in model.config.dit.input_add_groups:
        controls.append(Control(group.name, group.channels, offset))
        offset += group.channels
    return tuple(controls)


def _numbers(model: LMDM) -> dict[str, tuple[float, float, float]]:
    """Number conditioners with their range and the default the engine feeds: the window's
    length in seconds for ``seconds_total`` (what LMDM's streaming windows were trained on)."""
    stream, rate = model.config.stream, model.config.latent_rate
    out = {}
    for spec in model.config.conditioning.conditioners:
        if spec.type == "number":
            lo, hi = spec.params.min_val, spec.params.max_val
            out[spec.id] = (lo, hi, min(max(stream.window_frames / rate, lo), hi))
    return out


def _model_card(model: LMDM, request: ExportRequest, manifest: Manifest) -> str:
    g = manifest.geometry
    params = sum(p.numel() for p in model.dit.parameters())
    return "\n".join([
        f"# LMDM bundle ({request.preset or 'custom'}, {request.dtype})", "",
        f"* source: {request.source}",
        f"* DiT: {params / 1e6:.2f} M parameters, {g.layers} layers, width {g.embed_dim}, "
        f"{g.heads} heads",
        f"* audio: {g.sample_rate} Hz, {g.audio_channels} channel(s); latents: "
        f"{g.latent_channels} channels at {g.latent_rate:.2f} frames/s",
        f"* streaming: {manifest.pattern}, context {g.context_frames} + block {g.block_frames} "
        f"frames ({g.block_seconds:.2f} s per block)",
        f"* prompt encoder: {manifest.text.encoder}",
        f"* sampler defaults: {manifest.sampler.name}, {manifest.sampler.steps} steps, "
        f"CFG {manifest.sampler.cfg_scale}{describe_cfg_interval(manifest.sampler.cfg_interval)}",
        f"* written by lmdm-bridge {__version__}, bundle format {FORMAT_VERSION}", "",
        "Weights trained or initialised as stated by the source; random-init bundles make noise "
        "and exist to test and benchmark the pipeline.", ""])


def export_bundle(model: LMDM, out: str | Path, request: ExportRequest = ExportRequest(), *,
                  force: bool = False, progress: Progress = _stderr_progress) -> Manifest:
    """Export ``model`` as a bundle folder ``out``; returns its manifest."""
    out = Path(out)
    if model.config.stream is None:
        raise ValueError("only a streaming LMDM (with a stream geometry) can be exported")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _write(model.eval(), tmp, request, progress)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"bundle written to {out}")
    return manifest


def _write(model: LMDM, root: Path, request: ExportRequest, progress: Progress) -> Manifest:
    cid, text = _text_conditioner(model)
    sources: tuple[str, ...] = ()
    if request.include_source_weights:
        source = root / "source"
        source.mkdir()
        if isinstance(model.autoencoder, StftCodec):
            # A default-family model: its release file is the torch source verify rebuilds from.
            torch.save(release_payload(model, stage="lmdm", steps=0),
                       source / "release.pt")
            sources = ("source/release.pt",)
        else:
            (source / "model_config.json").write_text(json.dumps(to_sat_config(model.config),
                                                                 indent=2))
            save_weights(model, source / "model.safetensors")
            sources = ("source/model_config.json", "source/model.safetensors")
    # Weight norm is folded on a copy: the exported decoder runs plain convolutions.
    folded = LMDM(model.config)
    folded.load_state_dict(model.state_dict())
    fold_weight_norm(folded.autoencoder)
    folded.eval()
    graphs = _examples(folded)
    raw = root / "raw"
    raw.mkdir()
    shared = _SharedWeights(root / WEIGHTS)
    specs = {}
    try:
        for i, (role, (module, args, dims)) in enumerate(graphs.items(), 1):
            start = time.perf_counter()
            path = raw / f"{role}.onnx"
            _export_graph(role, module, args, path)
            _convert(role, path, request.dtype)
            graph = onnx.load(str(path))
            shared.externalize(graph)
            onnx.save(graph, str(root / f"{role}.onnx"))
            specs[role] = GraphSpec(
                role=role, file=f"{role}.onnx", sha256=sha256_file(root / f"{role}.onnx"),
                inputs=_tensor_specs(graph.graph.input), outputs=_tensor_specs(graph.graph.output),
                example_dims=dims, weights=(WEIGHTS,))
            progress(f"[{i}/{len(graphs)}] {role}.onnx ({time.perf_counter() - start:.1f} s)")
    finally:
        shared.close()
    shutil.rmtree(raw)
    text.encoder.tokenizer.backend_tokenizer.save(str(root / "tokenizer.json"))
    stream = model.config.stream
    extra = {"tokenizer.json": sha256_file(root / "tokenizer.json")}
    for name in sources:
        extra[name] = sha256_file(root / name)
    manifest = Manifest(
        format=FORMAT, format_version=FORMAT_VERSION, created_by=f"lmdm-bridge {__version__}",
        dtype=request.dtype, model=_model_info(model, request),
        geometry=_geometry(model, text), pattern=stream.pattern,
        cached_step_mask=stream.cached_step_mask, rope_mode=stream.rope_mode,
        sampler=request.sampler, controls=_controls(model), numbers=_numbers(model),
        text=TextSpec(encoder=type(text).__name__, tokenizer="tokenizer.json",
                      max_length=text.max_length, conditioner_id=cid),
        graphs=specs, weights={WEIGHTS: sha256_file(root / WEIGHTS)}, extra_files=extra)
    card = _model_card(model, request, manifest)
    (root / "model_card.md").write_text(card)
    manifest = Manifest(**{**manifest.__dict__,
                           "extra_files": {**extra,
                                           "model_card.md": sha256_file(root / "model_card.md")}})
    (root / MANIFEST).write_text(manifest.to_json())
    return manifest
