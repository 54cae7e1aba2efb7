"""What guiding fewer steps saves: the engine's time per block for several guidance intervals.

    .venv/bin/python scripts/bench-cfg-interval.py [--bundle DIR] [--blocks 15] [--threads 1]
        [--interval 0.45 1 --interval 0.7 1 ...]

One engine per interval on the same bundle (default: the embedded default model) and prompt;
after a warm-up block each, the engines take turns block by block, so a change in the machine's
load reaches all of them alike. Prints each interval's median block time (the DiT steps and the
guidance, no decoding) and its speed-up over guiding every step, measured in this one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lmdm_bridge.bundle import Bundle
from lmdm_bridge.default_model import default_bundle
from lmdm_bridge.engine import Engine

PROMPT = "string ensemble chorale in G major, 92 bpm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the embedded one)")
    parser.add_argument("--blocks", type=int, default=15, help="timed blocks per interval")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--interval", type=float, nargs=2, action="append",
                        metavar=("T_LO", "T_HI"),
                        help="an interval to time beside [0, 1] (default: 0.45 1 and 0.7 1)")
    args = parser.parse_args()
    bundle = Bundle(args.bundle or default_bundle(), threads=args.threads)
    intervals = [(0.0, 1.0)] + [tuple(i) for i in args.interval or [(0.45, 1.0), (0.7, 1.0)]]
    engines = []
    for interval in intervals:
        engine = Engine(bundle, cfg_interval=interval, seed=1)
        engine.set_prompt(PROMPT)
        engine.next_block()  # the bootstrap block, not timed
        engines.append(engine)
    times = [[] for _ in intervals]
    for _ in range(args.blocks):
        for engine, spent in zip(engines, times, strict=True):
            start = time.perf_counter()
            engine.next_block()
            spent.append(time.perf_counter() - start)
    every = float(np.median(times[0]))
    print(f"{bundle.root}: CFG {engines[0].cfg_scale:g}, {engines[0].steps} steps, "
          f"{args.threads} thread(s), {args.blocks} blocks each")
    for interval, spent in zip(intervals, times, strict=True):
        median = float(np.median(spent))
        print(f"cfg_interval [{interval[0]:g}, {interval[1]:g}]: median {median * 1e3:.1f} ms "
              f"per block, {every / median:.2f}x the speed of guiding every step")


if __name__ == "__main__":
    main()
