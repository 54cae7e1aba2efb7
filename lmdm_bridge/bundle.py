"""A bundle on disk as callable graphs: the manifest plus one onnxruntime session per role.

Sessions are created on first use, so a host that only decodes never loads the DiT. Execution
providers come from the caller (``"auto"``, ``"cpu"``, ``"cuda"``) with a CPU fallback; the
choice is logged. Every call goes through onnxruntime's IO binding, which lets the engine

* write outputs into buffers it preallocated (no per-block allocation of cache-sized arrays),
* keep tensors on the device between calls: a :data:`Buffer` is a numpy array on CPU and an
  ``OrtValue`` in device memory under CUDA. The engine treats it as an opaque handle it gets
  from :meth:`Bundle.buffer` and passes back; only :meth:`Bundle.to_host` and
  :meth:`Bundle.copy_from_host` look inside.

Each call is timed per role (:attr:`Bundle.stats`) for render statistics and benchmarks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import onnxruntime as ort

from lmdm_bridge.manifest import (
    BundleError,
    GraphSpec,
    Manifest,
    describe_cfg_interval,
    read_manifest,
)

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"

# A tensor the engine keeps between calls: numpy on CPU, an OrtValue on the session's device.
Buffer = Union[np.ndarray, ort.OrtValue]  # noqa: UP007 - OrtValue is a pybind class


@dataclass
class CallStats:
    """Wall-clock time of one graph role's calls (IO binding included)."""

    calls: int = 0
    seconds: float = 0.0
    last: float = 0.0
    worst: float = 0.0

    def add(self, seconds: float) -> None:
        self.calls += 1
        self.seconds += seconds
        self.last = seconds
        self.worst = max(self.worst, seconds)

    @property
    def mean(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0


def choose_providers(request: str) -> list[str]:
    """The onnxruntime provider list for ``request`` (one of :data:`PROVIDERS`): CUDA first
    where asked for (``"cuda"``) or available (``"auto"``), CPU always as the fallback."""
    if request not in PROVIDERS:
        raise ValueError(f"providers must be one of {PROVIDERS}, got {request!r}")
    available = ort.get_available_providers()
    if request == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if request == "cuda":
        log.warning("CUDA was requested but onnxruntime has no CUDAExecutionProvider "
                    "(available: %s); running on CPU. Install onnxruntime-gpu "
                    "(pip install 'lmdm-bridge[gpu]') for the GPU.", ", ".join(available))
    return [_CPU]


def default_threads() -> int:
    """Intra-op threads per graph when none are asked for: half the cores this process may use.

    The generator and the streaming decoder run side by side on their own threads
    (:mod:`lmdm_bridge.pipeline`), so each gets half. onnxruntime's own default, one thread per
    core for every session, loses twice on a small model: the two stages' thread pools compete
    for the same cores, and even alone its threads spend more time waiting on each other than
    computing (the default bundle on 2 cores: 150-190 ms per block with two threads, 115-135 ms
    with one; docs/performance.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // 2)


class Bundle:
    """A validated bundle folder with lazily created sessions.

    ``providers``: ``"auto"`` (CUDA when onnxruntime has it, else CPU), ``"cpu"`` or ``"cuda"``
    (falls back to CPU with a logged warning). ``threads``: onnxruntime's intra-op threads per
    graph (None: :func:`default_threads`; 0: onnxruntime's own default, one per core).
    ``device_buffers``: keep engine state in ``OrtValue``s (default: only under CUDA, where it
    saves the host round trip of the KV cache every call; on CPU it exists so tests can
    exercise that path). ``check_files``: verify every sha256 on load.
    """

    def __init__(self, path: str | Path, *, providers: str = "auto", threads: int | None = None,
                 device_buffers: bool | None = None, check_files: bool = True) -> None:
        self.root = Path(path)
        self.manifest: Manifest = read_manifest(self.root, check_files=check_files)
        self.providers = choose_providers(providers)
        self.device = "cuda" if self.providers[0] == _CUDA else "cpu"
        self.device_buffers = self.device == "cuda" if device_buffers is None else device_buffers
        self.threads = default_threads() if threads is None else threads
        self.stats: dict[str, CallStats] = {}
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._io: dict[str, tuple[set[str], tuple[str, ...]]] = {}  # input names, output names
        log.info("bundle %s: %s on %s (%s)", self.root, self.manifest.model.get("preset")
                 or "custom", self.device, ", ".join(self.providers))

    @property
    def geometry(self):
        return self.manifest.geometry

    def spec(self, role: str) -> GraphSpec:
        return self.manifest.graph(role)

    def session(self, role: str) -> ort.InferenceSession:
        """The session of ``role``, created on first use from inside the bundle folder (its
        external weights are referenced by relative path)."""
        if role not in self._sessions:
            spec = self.spec(role)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # onnxruntime's own warnings are not ours to print
            options.intra_op_num_threads = self.threads
            start = time.perf_counter()
            try:
                self._sessions[role] = ort.InferenceSession(
                    str(self.root / spec.file), sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own hierarchy of exceptions
                raise BundleError(f"{self.root / spec.file} does not load in onnxruntime "
                                  f"{ort.__version__}: {exc}") from exc
            session = self._sessions[role]
            self._io[role] = ({i.name for i in session.get_inputs()},
                              tuple(o.name for o in session.get_outputs()))
            log.info("loaded %s in %.2f s", spec.file, time.perf_counter() - start)
        return self._sessions[role]

    # -- buffers -----------------------------------------------------------------------------

    def buffer(self, shape: tuple[int, ...], dtype=np.float32) -> Buffer:
        """A zeroed tensor for state that stays with the session between calls."""
        if self.device_buffers:
            return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype), self.device, 0)
        return np.zeros(shape, dtype)

    def to_device(self, array: np.ndarray) -> Buffer:
        """A host array as a :data:`Buffer` (a copy on the device, or the array itself)."""
        array = np.ascontiguousarray(array)
        if self.device_buffers:
            return ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)
        return array

    @staticmethod
    def to_host(buffer: Buffer) -> np.ndarray:
        """A host copy of a buffer's contents (an OrtValue's ``numpy()`` of CPU memory is a view,
        hence the explicit copy)."""
        return np.array(buffer.numpy() if isinstance(buffer, ort.OrtValue) else buffer)

    @staticmethod
    def copy_from_host(buffer: Buffer, array: np.ndarray) -> None:
        """Overwrite a buffer in place (its shape and dtype stay)."""
        if isinstance(buffer, ort.OrtValue):
            buffer.update_inplace(np.ascontiguousarray(array, dtype=buffer.numpy().dtype))
        else:
            np.copyto(buffer, array)

    # -- calls -------------------------------------------------------------------------------

    def run(self, role: str, **feeds: np.ndarray | Buffer) -> dict[str, np.ndarray]:
        """Call graph ``role`` with its inputs by name; returns every output as a numpy array."""
        return self.run_into(role, feeds, {})

    def run_into(self, role: str, feeds: Mapping[str, np.ndarray | Buffer],
                 into: Mapping[str, Buffer]) -> dict[str, np.ndarray]:
        """Call ``role``, writing the outputs named in ``into`` into those buffers (which must
        have the outputs' shapes and must not be among the inputs); the other outputs are
        returned as numpy arrays. Inputs may be numpy arrays or buffers."""
        session = self.session(role)
        inputs, outputs = self._io[role]
        if feeds.keys() != inputs:
            raise ValueError(f"graph {role} takes {sorted(inputs)}, got {sorted(feeds)}")
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                # Bound in place (no copy on CPU); the engine's buffers are contiguous already.
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in outputs:
            target = into.get(name)
            if target is None:
                binding.bind_output(name, "cpu")
            elif isinstance(target, ort.OrtValue):
                binding.bind_ortvalue_output(name, target)
            else:
                if not target.flags.c_contiguous:
                    raise ValueError(f"output buffer for {role}.{name} is not contiguous")
                binding.bind_output(name, "cpu", 0, target.dtype, list(target.shape),
                                    target.ctypes.data)
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        if self.device != "cpu":
            binding.synchronize_outputs()
        self.stats.setdefault(role, CallStats()).add(time.perf_counter() - start)
        if len(into) == len(outputs):
            return {}
        values = binding.get_outputs()
        return {n: v.numpy() for n, v in zip(outputs, values, strict=True) if n not in into}

    def reset_stats(self) -> None:
        self.stats.clear()

    # -- description -------------------------------------------------------------------------

    def info(self) -> str:
        """A human-readable summary: the manifest (model, geometry, controls, sampler, graphs
        with their I/O shapes, weight sizes), then the files' sizes and the providers."""
        lines = [describe(self.manifest, self.root), "files"]
        sizes = {spec.file: (self.root / spec.file).stat().st_size
                 for spec in self.manifest.graphs.values()}
        sizes.update({name: (self.root / name).stat().st_size
                      for name in (*self.manifest.weights, *self.manifest.extra_files)})
        for name, size in sizes.items():
            lines.append(f"  {name:<28} {size / 1e6:10.2f} MB")
        lines.append(f"  {'total':<28} {sum(sizes.values()) / 1e6:10.2f} MB")
        lines.append(f"runtime    onnxruntime {ort.__version__} on {self.device} "
                     f"({', '.join(self.providers)})")
        return "\n".join(lines)


def describe(manifest: Manifest, root: Path) -> str:
    g, s = manifest.geometry, manifest.sampler
    model = manifest.model
    params = model.get("dit_parameters")
    lines = [
        f"bundle {root} (format {manifest.format_version}, {manifest.dtype}, "
        f"{manifest.created_by})",
        f"model      {model.get('preset') or 'custom'} from {model.get('source')}"
        + (f", DiT {params / 1e6:.2f} M parameters" if params else ""),
        f"audio      {g.sample_rate} Hz, {g.audio_channels} channel(s); latents {g.latent_channels}"
        f" ch at {g.latent_rate:.2f} frames/s ({g.downsampling_ratio} samples per frame)",
        f"streaming  {manifest.pattern}: context {g.context_frames} frames "
        f"({g.context_frames / g.latent_rate:.2f} s) + block {g.block_frames} frames "
        f"({g.block_seconds:.2f} s); cached steps: {manifest.cached_step_mask}, "
        f"RoPE {manifest.rope_mode}",
        f"DiT        {g.layers} layers, width {g.embed_dim}, {g.heads} heads of {g.head_dim}; "
        f"{g.cond_tokens} conditioning tokens of {g.cond_dim}",
        f"prompt     {manifest.text.encoder}, {manifest.text.max_length} tokens "
        f"({manifest.text.tokenizer})",
        "numbers    " + ", ".join(f"{k} in [{lo:g}, {hi:g}] (default {d:g})"
                                  for k, (lo, hi, d) in manifest.numbers.items()),
        "controls   " + ", ".join(f"{c.name} ({c.channels} ch)" for c in manifest.controls),
        f"sampler    {s.name}, {s.steps} steps, CFG {s.cfg_scale:g}"
        + (f" ({s.cfg_pp} CFG++)" if s.cfg_pp else "")
        + describe_cfg_interval(s.cfg_interval)
        + f", logSNR {s.logsnr_min:g}..{s.logsnr_max:g}",
        "graphs",
    ]
    for role, spec in manifest.graphs.items():
        ins = ", ".join(f"{i.name}{list(i.shape)}" for i in spec.inputs)
        outs = ", ".join(f"{o.name}{list(o.shape)}" for o in spec.outputs)
        lines.append(f"  {role:<13} {spec.file}")
        lines.append(f"  {'':<13}   in:  {ins}")
        lines.append(f"  {'':<13}   out: {outs}")
    return "\n".join(lines)
