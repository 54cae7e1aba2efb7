"""``lmdm-bridge bench``: per-block cost of every streaming method, measured in one run.

All methods run the same weights, the same number of steps and the same prompt, one after the
other in this process, so their ratios are comparable (absolute times move with the machine).

* ``outpaint_sat``: stable-audio-tools' own DiT doing block-wise outpainting (when installed):
  N full-window passes per block with RePaint replacement, the peer a user would otherwise run;
* ``outpaint_torch``, ``encdec_torch``, ``blockcausal_torch``: our torch model, eager;
* ``outpaint_ort``, ``encdec_ort``, ``blockcausal_ort`` (and ``blockcausal_ort_int8``): the
  bundle through the runtime engine;
* ``vae_decode_ort``: the bundle's decoder on one block.

Per method: median and p95 seconds per block in steady state (blocks after the first), time to
the first block (bootstrap or first prefill included), analytic GFLOP per block and the
fraction of the measured fp32 matmul peak reached.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lmdm_export.flops import block_flops, forward_flops
from lmdm_export.model.lmdm import LMDM
from lmdm_export.rollout import Guidance, make_conditioning, make_session, stream_blocks
from lmdm_export.sampling import SAMPLERS, logsnr_schedule

METHODS = {"outpaint": "outpaint", "encdec": "enc-dec", "blockcausal": "block-causal"}


@dataclass
class Result:
    name: str
    median_s: float
    p95_s: float
    first_block_s: float
    gflop_per_block: float | None
    fraction_of_peak: float | None
    blocks: int


def matmul_peak_gflops(threads: int, size: int = 1024, repeats: int = 7) -> float:
    """Best-case fp32 GEMM throughput on this machine (operands warm in cache): the fastest of
    ``repeats`` samples, since a peak is what the machine can do, not what it did on average."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        times.append((time.perf_counter() - start) / 5)
    return 2 * size ** 3 / min(times) / 1e9


def _summarise(name: str, times: list[float], gflop: float | None, peak: float) -> Result:
    steady = times[1:] or times
    median = statistics.median(steady)
    p95 = float(np.percentile(steady, 95))
    fraction = None if gflop is None else gflop / median / peak
    return Result(name, median, p95, times[0], gflop, fraction, len(times))


def _time_blocks(blocks: Iterator, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        next(blocks)
        times.append(time.perf_counter() - start)
    return times


def torch_blocks(model: LMDM, method: str, steps: int, sampler: str, cfg: float,
                 seed: int) -> Iterator:
    guidance = Guidance(scale=cfg)
    cross, glob = model.conditioning_inputs([{"prompt": "bench", "seconds_total": 11.0}])
    cond = make_conditioning(model.dit, cross, glob, guidance)
    gen = torch.Generator().manual_seed(seed)
    session = make_session(method, model.dit, model.config, cond, guidance=guidance,
                           generator=gen)
    with torch.inference_mode():
        yield from stream_blocks(session, 1 << 30, sampler=SAMPLERS[sampler],
                                 ts=logsnr_schedule(steps), generator=gen)


def sat_outpaint_blocks(model: LMDM, steps: int, seed: int) -> Iterator | None:
    """Block-wise outpainting with stable-audio-tools' DiT holding our base weights.

    SAT 0.0.20's DiT has no input-add projection (a 65 -> 1024 linear, ~0.01 % of the FLOPs),
    so the window's context is written back RePaint-style only, as SAT's own inpainting
    samplers do."""
    try:
        from stable_audio_tools.models.dit import DiffusionTransformer as SatDiT
    except ImportError:
        return None
    dit = model.config.dit
    sat = SatDiT(io_channels=dit.io_channels, embed_dim=dit.embed_dim, depth=dit.depth,
                 num_heads=dit.num_heads, cond_token_dim=dit.cond_token_dim,
                 global_cond_dim=dit.global_cond_dim, transformer_type="continuous_transformer",
                 attn_kwargs={"qk_norm": "ln"}, diffusion_objective="rectified_flow").eval()
    state = {k: v for k, v in model.dit.state_dict().items()
             if not k.startswith("to_input_add_embed")}
    sat.load_state_dict(state, strict=True)
    stream = model.config.stream
    s, c = stream.context_frames, stream.block_frames
    cross, glob = model.conditioning_inputs([{"prompt": "bench", "seconds_total": 11.0}])
    gen = torch.Generator().manual_seed(seed)
    ts = logsnr_schedule(steps)

    def blocks():
        context = torch.zeros(1, dit.io_channels, s)
        with torch.inference_mode():
            while True:
                x = torch.randn(1, dit.io_channels, c, generator=gen)
                for i in range(steps):
                    t = ts[i]
                    eps = torch.randn(context.shape, generator=gen)
                    window = torch.cat(((1 - t) * context + t * eps, x), dim=-1)
                    v = sat(window, t.expand(1), cross_attn_cond=cross, global_embed=glob,
                            cfg_scale=1.0)[..., s:]
                    x = x + (ts[i + 1] - t) * v
                context = torch.cat((context, x), dim=-1)[..., c:]
                yield x

    return blocks()


def ort_blocks(bundle: Path, method: str, steps: int, sampler: str, cfg: float,
               seed: int, threads: int, graph_times: dict[str, float]) -> Iterator:
    """The runtime engine's blocks; ``graph_times`` receives the mean seconds per call of each
    graph (sessions are loaded before the first block, so no block pays for loading)."""
    from lmdm_bridge.engine import Engine

    engine = Engine(bundle, method=method, steps=steps, sampler=sampler, cfg_scale=cfg,
                    seed=seed, threads=threads, providers="cpu")
    engine.set_prompt("bench")
    engine.bundle.reset_stats()
    while True:
        yield engine.next_block()
        graph_times.update({role: s.mean for role, s in engine.stats.items()})


def vae_decode_times(bundle: Path, blocks: int, threads: int) -> list[float]:
    import onnxruntime as ort

    from lmdm_bridge.decode import whole_decode_feeds
    from lmdm_bridge.manifest import read_manifest

    manifest = read_manifest(bundle, check_files=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(bundle / manifest.graph("vae_decoder").file), options,
                                   providers=["CPUExecutionProvider"])
    g = manifest.geometry
    latents = np.random.default_rng(0).standard_normal(
        (1, g.latent_channels, g.block_frames)).astype(np.float32)
    feeds = whole_decode_feeds(manifest.graph("vae_decoder"), latents)
    session.run(None, feeds)
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return times


def run_bench(model: LMDM, *, bundles: dict[str, Path], steps: int, blocks: int, sampler: str,
              cfg: float, seed: int, threads: int,
              progress: Callable[[str], None]) -> dict:
    """Measure every method; returns the JSON-ready report."""
    torch.set_num_threads(threads)
    peak = matmul_peak_gflops(threads)
    progress(f"fp32 matmul peak: {peak:.0f} GFLOP/s ({threads} threads)")
    cfg_model = model.config
    tc = cfg_model.conditioning.num_cross_attention_tokens
    batch = 2 if cfg != 1.0 else 1

    def gflop(method: str) -> float:
        return batch * block_flops(method, cfg_model.dit, cfg_model.stream, steps, tc) / 1e9

    results: list[Result] = []

    def record(name: str, times: list[float], method: str | None) -> None:
        result = _summarise(name, times, gflop(method) if method else None, peak)
        results.append(result)
        progress(f"{name:<22} median {result.median_s:7.3f} s  p95 {result.p95_s:7.3f} s  "
                 f"first {result.first_block_s:7.3f} s")

    sat = sat_outpaint_blocks(model, steps, seed) if cfg == 1.0 else None
    if sat is not None:
        record("outpaint_sat", _time_blocks(sat, blocks), "outpaint")
    for short, method in METHODS.items():
        record(f"{short}_torch",
               _time_blocks(torch_blocks(model, method, steps, sampler, cfg, seed), blocks),
               method)
    graph_times: dict[str, dict[str, float]] = {}
    for label, bundle in bundles.items():
        suffix = "" if label == "fp32" else f"_{label}"
        for short, method in METHODS.items():
            if suffix and method != "block-causal":
                continue
            times: dict[str, float] = {}
            record(f"{short}_ort{suffix}",
                   _time_blocks(ort_blocks(bundle, method, steps, sampler, cfg, seed, threads,
                                           times), blocks), method)
            graph_times[f"{short}_ort{suffix}"] = times
    if "fp32" in bundles:
        record("vae_decode_ort", vae_decode_times(bundles["fp32"], blocks, threads), None)
    # Measured again at the end: the larger figure bounds the machine (a shared VM's speed
    # drifts), and every fraction below is relative to it.
    late_peak = matmul_peak_gflops(threads)
    progress(f"fp32 matmul peak at the end: {late_peak:.0f} GFLOP/s")
    if late_peak > peak:
        peak = late_peak
        for r in results:
            if r.gflop_per_block is not None:
                r.fraction_of_peak = r.gflop_per_block / r.median_s / peak
    graphs = {name: _graph_report(times, cfg_model, batch, tc, peak)
              for name, times in graph_times.items()}
    stream = cfg_model.stream
    block_seconds = stream.block_frames / cfg_model.latent_rate
    return {
        "settings": {"steps": steps, "blocks": blocks, "sampler": sampler, "cfg": cfg,
                     "seed": seed, "threads": threads, "block_seconds": block_seconds,
                     "context_frames": stream.context_frames,
                     "block_frames": stream.block_frames},
        "matmul_peak_gflops": peak,
        "results": {r.name: asdict(r) for r in results},
        "graphs": graphs,
        "speedup_vs_outpaint_sat": _speedups(results, "outpaint_sat"),
        "speedup_vs_outpaint_torch": _speedups(results, "outpaint_torch"),
    }


def _graph_report(times: dict[str, float], config, batch: int, cond_tokens: int,
                  peak: float) -> dict[str, dict[str, float]]:
    """Mean seconds per call of each DiT graph, with its GFLOP and fraction of the peak."""
    s, c = config.stream.context_frames, config.stream.block_frames
    shapes = {"bc_bootstrap": (s + c + 1, s + c + 1), "bc_fused": (2 * c + 1, s + 2 * c + 1),
              "bc_cached": (c + 1, s + c + 1), "ed_prefill": (s, s),
              "ed_decoder": (c + 1, s + c + 1), "outpaint": (s + c + 1, s + c + 1)}
    out = {}
    for role, seconds in times.items():
        entry = {"seconds": seconds}
        if role in shapes:
            gflop = batch * forward_flops(config.dit, *shapes[role], cond_tokens) / 1e9
            entry.update(gflop=gflop, fraction_of_peak=gflop / seconds / peak)
        out[role] = entry
    return out


def _speedups(results: list[Result], baseline: str) -> dict[str, float]:
    base = {r.name: r for r in results}.get(baseline)
    if base is None:
        return {}
    return {r.name: base.median_s / r.median_s for r in results
            if r.gflop_per_block is not None}


def write_report(report: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def plot_report(report: dict, path: Path) -> None:
    """Bar chart of seconds per block (median, p95 whisker) with the real-time line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    med = [report["results"][n]["median_s"] for n in names]
    p95 = [report["results"][n]["p95_s"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar(names, med, yerr=[np.zeros(len(med)), np.subtract(p95, med)], capsize=3,
           color=["#999999" if "outpaint" in n else "#3572b0" for n in names])
    block = report["settings"]["block_seconds"]
    ax.axhline(block, color="#c0392b", linestyle="--", label=f"real time ({block:.2f} s block)")
    ax.set_ylabel("seconds per block (median, p95)")
    s = report["settings"]
    ax.set_title(f"{s['steps']} steps, {report['matmul_peak_gflops']:.0f} GFLOP/s fp32 peak, "
                 f"{s['threads']} threads")
    ax.tick_params(axis="x", rotation=35)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(report: dict) -> str:
    """The results as the Markdown table of docs/performance.md."""
    sat = report["results"].get("outpaint_sat")
    lines = ["| method | median s/block | p95 | first block | GFLOP/block | % of fp32 peak | "
             "speed-up vs outpaint_sat |", "|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        gflop = "" if r["gflop_per_block"] is None else f"{r['gflop_per_block']:.0f}"
        frac = "" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.0f} %"
        speed = (f"{sat['median_s'] / r['median_s']:.2f}x"
                 if sat and r["gflop_per_block"] is not None else "")
        lines.append(f"| `{name}` | {r['median_s']:.3f} | {r['p95_s']:.3f} | "
                     f"{r['first_block_s']:.3f} | {gflop} | {frac} | {speed} |")
    lines += ["", "| graph (ORT, per call) | seconds | GFLOP | % of fp32 peak |",
              "|---|---|---|---|"]
    for method, graphs in report.get("graphs", {}).items():
        for role, g in graphs.items():
            if "gflop" in g:
                lines.append(f"| `{method}` {role} | {g['seconds']:.3f} | {g['gflop']:.1f} | "
                             f"{100 * g['fraction_of_peak']:.0f} % |")
    return "\n".join(lines)
