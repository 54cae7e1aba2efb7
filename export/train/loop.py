"""What every training stage shares: processes, checkpoints, resume, logging and progress.

* **Processes.** The same command runs alone or under ``torchrun``: with ``WORLD_SIZE > 1`` in
  the environment, :func:`init_distributed` joins the process group (gloo on CPU, NCCL on GPU)
  and models are wrapped in plain ``DistributedDataParallel``.
* **Checkpoints** (:class:`Checkpointer`) hold everything needed to continue bit-for-bit: model
  and optimiser states, step, every RNG (python, numpy, torch, and the data sampler's generator)
  and the config. They are written by rank 0 to a temp file and renamed, so a killed run never
  leaves a half-written checkpoint. Release weights (what ``lmdm-bridge export`` reads) are a
  separate, smaller file written at the end or on demand.
* **Logs** are JSON lines (``log.jsonl``): the loss, the loss per noise-level bucket for diffusion
  stages, the learning rate and throughput. A one-line progress bar goes to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group when there is one (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world,
                device=torch.device(f"cuda:{local}" if cuda else "cpu"))


def wrap_ddp(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """``DistributedDataParallel`` when several processes train; the module itself otherwise."""
    if d.world == 1:
        return model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS} (bf16: mixed "
                         "precision, the forward passes' matrix products in bfloat16)")


def autocast(precision: str, device: torch.device):
    """The forward passes' precision: ``"bf16"`` runs matrix products and convolutions in
    bfloat16 (``torch.autocast``) while weights, optimiser state, losses and releases stay
    fp32 - the mixed precision stable-audio-tools trains with on GPUs, and faster on CPUs with
    bfloat16 matrix units (docs/default-model.md, "Training in bf16"); ``"fp32"`` changes
    nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # noise drawn on the GPU (the codec's latent samples)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # a GPU run resumed on a GPU
        torch.cuda.set_rng_state_all(state["cuda"])


def cosine_lr(step: int, *, base: float, warmup: int, total: int, floor: float = 0.05) -> float:
    """Linear warm-up to ``base``, then cosine down to ``floor * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class Checkpointer:
    """``run_dir/checkpoint.pt`` (training state) and ``run_dir/release.pt`` (weights + config).

    ``save`` is atomic and rank-0 only; ``load`` maps to CPU and returns None when there is no
    checkpoint yet.
    """

    def __init__(self, run_dir: str | Path, d: Dist) -> None:
        self.run_dir = Path(run_dir)
        self.d = d
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save(self, state: dict[str, Any]) -> None:
        if self.d.main:
            _atomic_save(state, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def release(self, name: str, payload: dict[str, Any]) -> Path:
        out = self.run_dir / name
        if self.d.main:
            _atomic_save(payload, out)
        return out


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (through dicts, lists and tuples) on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(to_cpu, obj))
    return obj


def _atomic_save(obj: Any, path: Path) -> None:
    """Written on the CPU, so a checkpoint or release made on a GPU loads, resumes and exports
    on a machine without one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(to_cpu(obj), tmp)
    os.replace(tmp, path)


def check_resume(run_dir: Path, resume: bool) -> None:
    """Refuse to silently overwrite a run, or to resume one that does not exist."""
    exists = (run_dir / "checkpoint.pt").exists()
    if exists and not resume:
        raise FileExistsError(f"{run_dir} already holds a training checkpoint: pass --resume to "
                              "continue it, or choose another `out` folder")
    if resume and not exists:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}; start without --resume")


class RunLog:
    """JSON-lines log plus a one-line progress bar (rank 0 only)."""

    def __init__(self, run_dir: Path, d: Dist, total_steps: int, config: Any) -> None:
        self.d = d
        self.total = total_steps
        self.start = time.monotonic()
        self.file = None
        if d.main:
            self.file = open(run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self.write({"event": "start", "world": d.world, "config": _plain(config)})

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            record = {"time": round(time.time(), 3), **record}
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def progress(self, step: int, first_step: int, **values: float) -> None:
        if not self.d.main:
            return
        elapsed = time.monotonic() - self.start
        rate = (step - first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        filled = int(30 * step / max(1, self.total))
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} "
                         f"{rate:.2f} it/s eta {eta / 60:.0f} min {shown}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.file is not None:
            sys.stderr.write("\n")
            self.file.close()


def _plain(config: Any) -> Any:
    try:
        return asdict(config)
    except TypeError:
        return config


def all_reduce_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean over processes (for logging); the value itself when alone."""
    if d.world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= d.world
    return value


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj`` in rank order (checkpoints keep each rank's RNG streams)."""
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def fingerprint(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """A digest of every parameter's bytes (but the state-dict entries named in ``skip``): equal
    on all ranks iff the replicas are identical."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if name in skip:
            continue
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_replicas(module: torch.nn.Module, d: Dist, runlog: RunLog) -> None:
    """Under DDP, compare the ranks' parameters bit for bit at the end of training; log the
    fingerprints and fail loudly when the replicas drifted apart (a DDP bug, not noise)."""
    prints = gather_objects(fingerprint(module), d)
    runlog.write({"event": "replicas", "fingerprints": prints,
                  "identical": len(set(prints)) == 1})
    if len(set(prints)) != 1:
        raise RuntimeError(f"the {d.world} training processes ended with different "
                           f"parameters: {prints}")


def noise_buckets(t: torch.Tensor, losses: torch.Tensor, edges: tuple[float, ...]
                  ) -> dict[str, tuple[float, int]]:
    """Per-sample losses grouped by noise level ``t`` in [0, 1]: bucket name -> (sum, count)."""
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (t >= lo) & (t < hi) if hi < edges[-1] else (t >= lo) & (t <= hi)
        if sel.any():
            out[f"t{lo:.1f}-{hi:.1f}"] = (float(losses[sel].sum()), int(sel.sum()))
    return out
