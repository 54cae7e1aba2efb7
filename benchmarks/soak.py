"""Soak benchmark of the daemon: ``lmdm-bridge serve`` on a JACK dummy server for a long time.

Not a test: it measures, prints and (with ``--json``) saves; nothing asserts. What it does:

1. starts ``jackd -d dummy`` under a name of its own (no sound card needed, nothing else on the
   machine is touched) and ``lmdm-bridge serve --audio device --input system --output system
   --autoplay`` on it, as a user would on Linux;
2. subscribes to the daemon over UDP (``/lmdm/subscribe``): one ``/lmdm/block index rtf`` per
   generated block gives each block's generation time (``rtf`` x block length);
3. sends ``/lmdm/prompt`` every ``--prompt-every`` seconds, cycling through a few prompts (each
   a new dominant prompt: a text-encoder run and a cache re-bootstrap, the expensive path);
4. samples the daemon's resident memory (``/proc/PID/status`` VmRSS) every few seconds;
5. after ``--minutes``, reads ``/lmdm/status`` (underruns, xruns), stops the daemon with SIGTERM
   and reports: xruns, underruns, RSS when ready, after ``--settle`` seconds of playing and at
   the end with the growth between the last two, generation time per block (p50/p95/p99, max)
   and the real-time factor (generation time / audio time: below 1 keeps up).

Usage (the tiny bundle; without ``--bundle`` a random-weight tiny bundle is exported first,
which needs the torch side installed)::

    python benchmarks/soak.py --minutes 10 --bundle /tmp/tiny --json soak.json

Figures and the machine they were measured on: docs/performance.md, "Daemon soak".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from lmdm_bridge.manifest import read_manifest

EXE = str(Path(sys.executable).with_name("lmdm-bridge"))
PROMPTS = ("string ensemble chorale", "distorted breakbeat with sub bass",
           "solo piano ballad in E minor", "ambient pads with slow swells",
           "funk bass and clavinet groove")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


class Listener:
    """The reply socket: collects ``/lmdm/block`` (block index, rtf) and keeps the latest
    ``/lmdm/status``, on a thread of its own."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.blocks: list[tuple[int, float]] = []
        self.status: dict = {}
        self.status_count = 0
        self.pongs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
                message = OscMessage(data)
            except (TimeoutError, OSError, ValueError):
                continue
            if message.address == "/lmdm/block":
                self.blocks.append((int(message.params[0]), float(message.params[1])))
            elif message.address == "/lmdm/status":
                args = message.params
                self.status = dict(zip(args[::2], args[1::2], strict=True))
                self.status_count += 1
            elif message.address == "/lmdm/pong":
                self.pongs += 1

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _start_jack(name: str, rate: int, period: int) -> subprocess.Popen:
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(rate), "-p",
                             str(period)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while b"system:" not in subprocess.run(["jack_lsp", "-s", name],
                                           capture_output=True).stdout:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("jackd did not start (is jackd2 installed?)")
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return proc.returncode


def _export_tiny(folder: Path) -> Path:
    print(f"soak: exporting a random-weight tiny bundle to {folder / 'tiny'}", file=sys.stderr)
    subprocess.run([EXE, "export", "--preset", "tiny", "--random-init", "--out",
                    str(folder / "tiny")], check=True, stdout=subprocess.DEVNULL)
    return folder / "tiny"


def soak(args: argparse.Namespace, bundle: Path) -> dict:
    block_seconds = read_manifest(bundle, check_files=False).geometry.block_seconds
    server = f"lmdm-soak-{os.getpid()}"
    osc_port, reply_port = _free_port(), _free_port()
    jackd = _start_jack(server, args.rate, args.period)
    listener = Listener(reply_port)
    config = Path(tempfile.mkdtemp(prefix="lmdm-soak-")) / "soak.toml"
    config.write_text(f"ahead = {args.ahead}\n"
                      + (f"threads = {args.threads}\n" if args.threads else ""))
    env = {**os.environ, "JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1"}
    log = open(args.log, "w") if args.log else subprocess.DEVNULL  # noqa: SIM115
    daemon = subprocess.Popen(
        [EXE, "serve", "--bundle", str(bundle), "--config", str(config), "--audio", "device",
         "--input", "system", "--output", "system", "--samplerate", str(args.rate),
         "--blocksize", str(args.blocksize), "--osc-port", str(osc_port), "--reply-port",
         str(reply_port), "--prompt", PROMPTS[0]],
        stdout=log, stderr=log, env=env)
    client = SimpleUDPClient("127.0.0.1", osc_port)
    try:
        deadline = time.monotonic() + 300
        while listener.pongs == 0:  # the daemon answers once its model is warmed up
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not come up (exit {daemon.poll()})")
            client.send_message("/lmdm/ping", [])
            time.sleep(0.25)
        rss_ready = _rss_mib(daemon.pid)
        client.send_message("/lmdm/subscribe", [reply_port])
        client.send_message("/lmdm/play", [])
        started = time.monotonic()
        end = started + 60 * args.minutes
        rss: list[tuple[float, float]] = []
        next_prompt, next_rss, changes = started + args.prompt_every, started, 0
        settle_blocks = 0
        while (now := time.monotonic()) < end:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode} during the soak")
            if now >= next_prompt:
                changes += 1
                client.send_message("/lmdm/prompt", [PROMPTS[changes % len(PROMPTS)]])
                next_prompt += args.prompt_every
            if now >= next_rss:
                rss.append((now - started, _rss_mib(daemon.pid)))
                next_rss += args.rss_every
            if not settle_blocks and now - started >= args.settle:
                settle_blocks = len(listener.blocks)
            time.sleep(0.05)
        rss.append((time.monotonic() - started, _rss_mib(daemon.pid)))
        count = listener.status_count
        client.send_message("/lmdm/status", [])
        listener.wait(lambda: listener.status_count > count, 10, "the final /lmdm/status")
        status = dict(listener.status)
        played = time.monotonic() - started
        code = _stop(daemon)
    finally:
        _stop(daemon)
        listener.close()
        _stop(jackd, timeout=5)
        if args.log:
            log.close()

    rtf = np.array([r for _, r in listener.blocks[settle_blocks:]])
    gen_ms = rtf * block_seconds * 1000
    settled = [m for t, m in rss if t >= args.settle] or [rss[-1][1]]
    return {
        "bundle": str(bundle), "minutes": args.minutes, "played_seconds": round(played, 1),
        "machine": _machine(), "load_average": os.getloadavg(),
        "jack": {"rate": args.rate, "period": args.period}, "blocksize": args.blocksize,
        "ahead": args.ahead, "threads": args.threads, "prompt_changes": changes,
        "blocks": len(listener.blocks), "block_seconds": block_seconds,
        "blocks_after_settle": int(len(rtf)),
        "underruns": status.get("underruns"), "xruns": status.get("xruns"),
        "osc_errors": status.get("errors"), "last_error": status.get("error"),
        "rss_mib": {"ready": round(rss_ready, 1), "settled": round(settled[0], 1),
                    "end": round(rss[-1][1], 1), "max": round(max(m for _, m in rss), 1),
                    "growth_percent": round(100 * (rss[-1][1] / settled[0] - 1), 2)},
        "generation_ms": {f"p{q}": round(float(np.percentile(gen_ms, q)), 1)
                          for q in (50, 95, 99)} | {"max": round(float(gen_ms.max()), 1)},
        "rtf": {"mean": round(float(rtf.mean()), 3),
                **{f"p{q}": round(float(np.percentile(rtf, q)), 3) for q in (50, 95, 99)}},
        "blocks_slower_than_real_time": int((rtf > 1).sum()),
        "exit_code": code,
    }


def markdown(r: dict) -> str:
    rss, gen, rtf = r["rss_mib"], r["generation_ms"], r["rtf"]
    rows = [
        ("played", f"{r['played_seconds']} s, {r['blocks']} blocks of "
                   f"{r['block_seconds'] * 1000:.0f} ms, {r['prompt_changes']} prompt changes"),
        ("underruns", r["underruns"]), ("xruns", r["xruns"]),
        ("RSS ready / settled / end (MiB)", f"{rss['ready']} / {rss['settled']} / {rss['end']}"),
        ("RSS growth settled -> end", f"{rss['growth_percent']:+.2f} %"),
        ("generation per block p50 / p95 / p99 / max",
         f"{gen['p50']} / {gen['p95']} / {gen['p99']} / {gen['max']} ms"),
        ("real-time factor p50 / p95 / p99 (mean)",
         f"{rtf['p50']} / {rtf['p95']} / {rtf['p99']} ({rtf['mean']})"),
        ("blocks slower than real time", r["blocks_slower_than_real_time"]),
        ("exit code after SIGTERM", r["exit_code"]),
    ]
    return "\n".join(["| measure | value |", "|---|---|",
                      *(f"| {k} | {v} |" for k, v in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: export tiny)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--prompt-every", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                        help="playing time before the RSS and latency baseline (default 30)")
    parser.add_argument("--rss-every", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--rate", type=int, default=48000, help="JACK sample rate")
    parser.add_argument("--period", type=int, default=256, help="JACK period in frames")
    parser.add_argument("--blocksize", type=int, default=256, help="PortAudio block size")
    parser.add_argument("--ahead", type=int, default=2, help="blocks the daemon keeps ready")
    parser.add_argument("--threads", type=int,
                        help="the daemon's onnxruntime threads (default: onnxruntime's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--log", type=Path, help="the daemon's output (default: discarded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmdm-soak-bundle-") as folder:
        bundle = args.bundle or _export_tiny(Path(folder))
        result = soak(args, bundle)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nmachine: {result['machine']}; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in result['load_average'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
