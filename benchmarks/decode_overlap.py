"""Streaming real-time factor with and without decoding beside generation, in one run.

Not a test: it measures and prints; nothing asserts. Each configuration renders the same
prompt and seed through the engine and the streaming decoder of one bundle (sessions loaded
and warmed up before timing), and the configurations take turns ``--repeats`` times so that a
change in the machine's load hits all of them alike:

* ``sequential, onnxruntime threads``: each block decoded before the next is sampled, every
  graph on onnxruntime's default thread pool (one thread per core): how the runtime ran
  before :mod:`lmdm_bridge.pipeline`;
* ``sequential, N threads``: the same loop on the runtime's default threads per graph
  (:func:`lmdm_bridge.bundle.default_threads`);
* ``overlapped, N threads``: :func:`lmdm_bridge.render.render`, the decoder on its own thread
  (what ``render``, ``serve`` and ``eval`` do now).

It prints per configuration the median over repeats of the steady real-time factor (block
audio over the median interval between blocks' audio) and of the whole render's (audio over
wall time, prompt encoding and the first block included), and each one's ratio to the first.

Usage (the embedded default model when ``--bundle`` is left out)::

    python benchmarks/decode_overlap.py --seconds 60 --repeats 3 --json overlap.json

Figures and the machine they were measured on: docs/performance.md, "Decoding beside
generation".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from lmdm_bridge.bundle import Bundle, default_threads
from lmdm_bridge.decode import StreamingDecoder
from lmdm_bridge.default_model import default_bundle
from lmdm_bridge.engine import Engine
from lmdm_bridge.render import render

PROMPT = "church organ chorale in C major, 80 bpm"


def sequential(bundle: Bundle, seconds: float, seed: int) -> tuple[float, float]:
    """(steady RTF, whole RTF) of the one-thread loop: sample a block, decode it, repeat."""
    g = bundle.geometry
    start = time.perf_counter()
    engine = Engine(bundle, seed=seed)
    decoder = StreamingDecoder(bundle)
    engine.set_prompt(PROMPT)
    blocks = int(np.ceil((seconds * g.sample_rate + decoder.latency)
                         / (g.block_frames * g.downsampling_ratio)))
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        decoder.push(engine.next_block())
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return g.block_seconds / float(np.median(times)), seconds / wall


def overlapped(bundle: Bundle, seconds: float, seed: int) -> tuple[float, float]:
    _, stats = render(bundle, prompt=PROMPT, seconds=seconds, seed=seed)
    return stats.block_seconds / stats.block_median, stats.realtime_factor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: the embedded one)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT.json")
    args = parser.parse_args()
    path = args.bundle or default_bundle()
    n = default_threads()
    configs = [
        (f"sequential, onnxruntime threads ({os.cpu_count()})", 0, sequential),
        (f"sequential, {n} thread(s) per graph", n, sequential),
        (f"overlapped, {n} thread(s) per graph", n, overlapped),
    ]
    bundles = {threads: Bundle(path, providers="cpu", threads=threads)
               for threads in {c[1] for c in configs}}  # 0: onnxruntime's own default
    for bundle in bundles.values():
        sequential(bundle, bundle.geometry.block_seconds * 3, args.seed)  # load and warm up
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in configs}
    for _ in range(args.repeats):
        for name, threads, run in configs:
            results[name].append(run(bundles[threads], args.seconds, args.seed))
    base_steady = statistics.median(r[0] for r in results[configs[0][0]])
    base_whole = statistics.median(r[1] for r in results[configs[0][0]])
    report = {"bundle": str(path), "seconds": args.seconds, "repeats": args.repeats,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load_average": os.getloadavg(), "configs": {}}
    print(f"{path}: {args.seconds:g} s per render, median of {args.repeats}")
    print(f"{'configuration':<44} {'steady RTF':>10} {'ratio':>6} {'whole RTF':>10} {'ratio':>6}")
    for name, _, _ in configs:
        steady = statistics.median(r[0] for r in results[name])
        whole = statistics.median(r[1] for r in results[name])
        report["configs"][name] = {"steady_rtf": steady, "whole_rtf": whole,
                                   "steady_ratio": steady / base_steady,
                                   "whole_ratio": whole / base_whole, "runs": results[name]}
        print(f"{name:<44} {steady:10.2f} {steady / base_steady:6.2f} {whole:10.2f} "
              f"{whole / base_whole:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
