"""The daemon: three roles with clear ownership.

* the **audio callback** (the back-end's, :mod:`lmdm_bridge.audio`) only copies between the
  device and two rings, and fades instead of clicking when the output ring runs dry;
* the **generation worker** (:meth:`Daemon.run`, the calling thread) applies queued controls at
  block boundaries, keeps ``ahead`` blocks of audio queued in front of playback, and publishes
  the status;
* the **decode stage** (:class:`~lmdm_bridge.pipeline.DecodeStage`, its own thread) decodes
  each block while the worker samples the next; only the worker submits to it and queues its
  audio;
* the **OSC server** (its own thread) validates messages and queues controls; it never touches
  the engine.

Nothing the callback touches is locked by the worker: they share only the lock-free ring.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lmdm_bridge.audio import (
    CaptureRecorder,
    OutputFeed,
    WavRecorder,
    build_chains,
    create_backend,
)
from lmdm_bridge.daemon.config import DaemonConfig
from lmdm_bridge.daemon.loader import LoadFailed, ModelLoader
from lmdm_bridge.daemon.model import Model, load_model
from lmdm_bridge.manifest import read_manifest
from lmdm_bridge.osc import (
    ControlQueue,
    Eject,
    OscConfig,
    OscServer,
    Play,
    Reseed,
    Reset,
    SetCfg,
    SetFx,
    SetGain,
    SetPrompt,
    SetSteps,
    StatusSnapshot,
    Stop,
    SwitchModel,
    TableSettings,
    build_table,
)
from lmdm_bridge.pipeline import DecodeStage

log = logging.getLogger(__name__)


@dataclass
class Counts:
    blocks: int = 0
    last_error: str = ""


class Daemon:
    """Builds every part from a :class:`DaemonConfig` and runs the generation worker until
    :meth:`stop`.

    Construction is the start-up check: the audio devices are resolved (no stream opened yet),
    the effect chains are built (an unknown plugin or parameter is a named ``ValueError``), the
    model is loaded and warmed up (:func:`~lmdm_bridge.daemon.model.warm_up`), then the OSC
    port is bound and the recordings are created. Whatever fails, what was opened before it is
    closed again: a daemon that did not start leaves no bound port, no thread and no recording
    behind.
    Once constructed, the daemon is ready: the first block it plays costs a steady block's time.
    """

    def __init__(self, config: DaemonConfig, bundle: Path, *, status_stream=None) -> None:
        self.config = config
        self.status_stream = status_stream
        audio = config.audio
        device_options = {}
        if audio.backend == "device":
            device_options = dict(input=audio.input, output=audio.output,
                                  in_channels=audio.in_channels, out_channels=audio.out_channels)
        # The model's rate is the default of the clocked back-ends; read it from the manifest
        # without loading any graph, so that the cheap checks (devices, chains) fail first.
        geometry = read_manifest(Path(bundle), check_files=False).geometry
        self.backend = create_backend(
            audio.backend, samplerate=audio.samplerate or (None if audio.backend == "device"
                                                           else geometry.sample_rate),
            blocksize=audio.blocksize, channels_in=len(audio.in_channels),
            channels_out=len(audio.out_channels), input_audio=audio.input_file,
            **device_options)
        self.chains = build_chains(list(config.fx.pre), list(config.fx.post),
                                   samplerate=self.backend.samplerate,
                                   safety_limiter=config.fx.limiter)
        # Sampler settings the user chose (config or OSC); None follows the bundle's manifest,
        # also after a model switch.
        self._chosen: dict[str, float | int | None] = {"steps": config.steps, "cfg": config.cfg}
        self.model = load_model(bundle, config.prompt, method=config.method,
                                steps=config.steps, cfg=config.cfg, seed=config.seed,
                                threads=config.threads)
        self.loader = ModelLoader(self._load)
        self.stage = DecodeStage(self.model.decoder)
        self.status = StatusSnapshot(model=self.model.name)
        self.feed = self._feed(recorder=None)  # checks the channel mapping
        with contextlib.ExitStack() as opened:
            self.server = OscServer(
                self._table(),
                OscConfig(host=config.osc.host, port=config.osc.port,
                          reply_port=config.osc.reply_port, allow=config.osc.allow,
                          models_dir=Path(config.models_dir) if config.models_dir else None),
                status=self.status, queue=ControlQueue())
            opened.callback(self.server.close)
            self.recorder = (WavRecorder(audio.record, self.backend.samplerate,
                                         self.backend.channels_out) if audio.record else None)
            if self.recorder is not None:
                opened.callback(_discard, self.recorder)
            self.input_recorder = (CaptureRecorder(self.backend.port.capture, audio.record_input)
                                   if audio.record_input else None)
            opened.pop_all()  # everything started: close() owns it from here
        self.feed.recorder = self.recorder
        self.playing = config.autoplay
        self.counts = Counts()
        self.stopped = threading.Event()
        self._rtf = 0.0
        self._status_at = 0.0

    # -- the model ---------------------------------------------------------------------------

    @property
    def bundle(self):
        return self.model.bundle

    @property
    def engine(self):
        return self.model.engine

    @property
    def decoder(self):
        return self.model.decoder

    def _feed(self, recorder) -> OutputFeed:
        g = self.bundle.geometry
        return OutputFeed(self.backend.port, g.sample_rate, g.audio_channels,
                          chain=self.chains.post, recorder=recorder)

    def _table(self):
        prompt = self.engine.prompt
        text = prompt[0][0] if prompt and len(prompt) == 1 else self.config.prompt
        settings = TableSettings.from_manifest(self.bundle.manifest, prompt=text,
                                               seed=self.engine.seed)
        return build_table(self.chains.describe(), settings)

    def _load(self, path: Path) -> Model:
        """The loader's job (its own thread): the new bundle with the prompt, seed and chosen
        settings of the one playing now."""
        return load_model(path, self.engine.prompt or self.config.prompt,
                          method=self.config.method, steps=self._chosen["steps"],
                          cfg=self._chosen["cfg"], seed=self.engine.seed,
                          threads=self.config.threads)

    def _swap(self, model: Model) -> None:
        """Play ``model`` from the next block on. The queued audio of the old one fades out
        (as on reset) and the new stream starts at its first block; the OSC table follows the
        new bundle's defaults."""
        old = self.bundle.geometry
        self.stage.close()
        self.feed.cut()
        self.model = model
        self.stage = DecodeStage(model.decoder)
        g = model.bundle.geometry
        if (g.sample_rate, g.audio_channels) != (old.sample_rate, old.audio_channels):
            self.feed = self._feed(self.recorder)
        self.server.table = self._table()
        self.status.update(model=model.name)
        log.info("playing model %r (warmed up in %.1f s)", model.name, model.warmup_seconds)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def latency_ms(self) -> float:
        """Input-to-output delay a DAW compensates: device latencies, processing, the decoder's
        held frames and the audio kept queued ahead."""
        rate = self.backend.samplerate
        device_in, device_out = self.backend.latency
        frames = device_in + device_out + self.feed.latency + self.feed.queued
        decoder = self.decoder.latency / self.bundle.geometry.sample_rate
        return 1000.0 * (frames / rate + decoder)

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        """The generation worker; returns after :meth:`stop` (or the end of a file render)."""
        self.backend.start()
        self.server.start()
        try:
            while not self.stopped.is_set():
                self._apply(self.server.controls.drain())
                self._take_loaded()
                block_seconds = self.model.block_seconds  # a switched model may differ
                if self.stage.ready:
                    self._collect()
                queued = self.feed.queued_seconds + self.stage.in_flight * block_seconds
                if self.playing and queued < self.config.ahead * block_seconds:
                    self._generate()
                else:
                    self.server.controls.wait(timeout=min(0.05, block_seconds / 4))
                self._publish()
        finally:
            self.close()

    def close(self) -> None:
        self.server.close()
        self.stage.close()
        self.backend.stop()
        for recorder in (self.recorder, self.input_recorder):
            if recorder is not None:
                recorder.close()

    # -- worker ------------------------------------------------------------------------------

    def _generate(self) -> None:
        """Sample the next block and hand it to the decode stage; queue the previous block's
        audio (decoded meanwhile) for playback."""
        start = time.perf_counter()
        try:
            audio = self.stage.submit(self.engine.next_block())
        except Exception as exc:  # one failed block must not stop the music for good
            self.counts.last_error = f"generation failed: {exc}"
            log.exception("generation failed")
            self.stopped.wait(0.5)
            return
        if audio is not None:
            self.feed.push(audio)
        seconds = time.perf_counter() - start
        # As /lmdm/status documents it: compute time over audio time, below 1 keeps up. With
        # the decoder running beside the engine, a block costs the slower of the two.
        self._rtf = seconds / self.bundle.geometry.block_seconds
        self.counts.blocks += 1
        self.server.notify_block(self.counts.blocks, self._rtf)

    def _collect(self) -> None:
        """Queue the audio the decode stage has finished (a failed decode loses its block, as a
        failed generation does, and is reported in the status)."""
        try:
            audio = self.stage.take()
        except Exception as exc:
            self.counts.last_error = f"decoding failed: {exc}"
            log.exception("decoding failed")
            return
        if audio is not None:
            self.feed.push(audio)

    def _take_loaded(self) -> None:
        loaded = self.loader.take()
        if isinstance(loaded, LoadFailed):
            self.counts.last_error = f"model {loaded.name!r}: {loaded.reason}"
        elif loaded is not None:
            self._swap(loaded)

    def _apply(self, controls: list) -> None:
        for control in controls:
            try:
                self._apply_one(control)
            except (ValueError, RuntimeError) as exc:
                self.counts.last_error = f"{type(control).__name__}: {exc}"
                log.warning("control %s failed: %s", control, exc)

    def _apply_one(self, control) -> None:
        if isinstance(control, Play):
            self.playing = True
        elif isinstance(control, Stop):
            self.playing = False
            self.stage.discard()
            self.feed.cut()
        elif isinstance(control, Reset):
            self.stage.reset()
            self.feed.cut()
            self.engine.reset()
        elif isinstance(control, SetPrompt):
            self.engine.set_prompt(control.prompt)
        elif isinstance(control, SetCfg):
            self.engine.set_cfg(control.scale)
            self._chosen["cfg"] = control.scale
        elif isinstance(control, SetSteps):
            self.engine.set_steps(control.steps)
            self._chosen["steps"] = control.steps
        elif isinstance(control, Reseed):
            self.engine.reseed(control.seed)
        elif isinstance(control, Eject):
            self.engine.eject(control.frames)
        elif isinstance(control, SetGain):
            self.backend.port.set_gain_db(control.db)
        elif isinstance(control, SetFx):
            self.chains.set_param(control.chain, control.index, control.param, control.value)
        elif isinstance(control, SwitchModel):
            self.loader.request(control.name, control.path)

    def _publish(self) -> None:
        now = time.monotonic()
        if now - self._status_at < 0.25:
            return
        self._status_at = now
        stats = self.backend.port.stats()
        prompt = self.engine.prompt
        text = " + ".join(p for p, _ in prompt) if prompt else ""
        state = ("loading" if self.loader.busy else "playing" if self.playing
                 else "stopped")
        self.status.update(state=state, prompt=text, rtf=self._rtf, blocks=self.counts.blocks,
                           ahead=self.feed.queued_seconds, underruns=stats["underruns"],
                           xruns=stats["xruns"], latency=self.latency_ms,
                           error=self.counts.last_error)
        if self.status_stream is not None:
            line = (f"\r[{state}] {text[:40]!r} rtf {self._rtf:5.2f} blocks "
                    f"{self.counts.blocks} queue {self.feed.queued_seconds:4.1f}s underruns "
                    f"{stats['underruns']} xruns {stats['xruns']}"
                    + (f" | {self.counts.last_error[:40]}" if self.counts.last_error else ""))
            self.status_stream.write(line.ljust(118)[:118])
            self.status_stream.flush()


def _discard(recorder: WavRecorder) -> None:
    """Undo a recording that was created by a start that then failed."""
    recorder.close()
    recorder.path.unlink(missing_ok=True)


def _is_tty(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def status_stream_for(stream=sys.stderr):
    """The live status line goes to a terminal only."""
    return stream if _is_tty(stream) else None
