"""``render_corpus``: plan, render what is missing (in worker processes), assemble the corpus.

Output folder::

    audio/<piece_id>--v<k>.flac          the mixes (the training items)
    stems/<piece_id>--v<k>/<voice>.flac  each voice alone, same length and gain as the mix
    records/<item id>.json               one record per finished item (resume markers)
    failed/<piece_id>.json               pieces that could not be rendered, with the reason
    metadata.jsonl                       every planned item that exists, sorted by id
    DATA_CARD.md, config.json            sources, licences, statistics; the resolved config

The run is incremental: an item whose record exists is not rendered again and a piece with a
failure marker is not retried, so an interrupted run resumes where it stopped (every file is
written to a temporary name and renamed). Delete ``failed/`` to retry failed pieces.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lmdm_export.data.card import write_data_card
from lmdm_export.data.config import DataConfig
from lmdm_export.data.items import JobResult, Worker, failure_path, record_path
from lmdm_export.data.plan import Job, plan_corpus
from lmdm_export.data.records import validate_record, write_json_atomic

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(jobs_done, jobs_total, piece_id)``, called in the parent after each job."""


@dataclass(frozen=True)
class RenderSummary:
    """What a run did and what the corpus holds afterwards."""

    items: int  # in metadata.jsonl
    rendered: int  # by this run
    skipped: int  # already rendered before this run
    failed_pieces: dict[str, str] = field(default_factory=dict)  # piece id -> reason
    items_per_split: dict[str, int] = field(default_factory=dict)
    hours_per_label: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0


def render_corpus(config: DataConfig, out_dir: str | Path, progress: Progress | None = None,
                  limit: int | None = None) -> RenderSummary:
    """Render the corpus of ``config`` into ``out_dir`` (created if needed); see module doc.

    ``limit`` caps pieces per source (overrides ``config.piece_limit``). Uses
    ``config.workers`` processes; 1 renders in this process.
    """
    start = time.perf_counter()
    check_soundfonts(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_corpus(config, limit)
    planned = [v.item_id for job in jobs for v in job.variants]
    pending, skipped = _pending(jobs, out)
    log.info("%d pieces, %d items planned; %d already rendered, %d pieces to render",
             len(jobs), len(planned), skipped, len(pending))

    results: list[JobResult] = []
    for done, result in enumerate(_run(config, out, pending), start=1):
        results.append(result)
        if progress is not None:
            progress(done, len(pending), result.piece_id)

    failed = {job.piece_id: json.loads(failure_path(out, job.piece_id).read_text())["reason"]
              for job in jobs if failure_path(out, job.piece_id).exists()}
    if failed:
        log.warning("%d pieces failed and were skipped (see %s)", len(failed), out / "failed")
    records = _assemble(out, planned)
    write_json_atomic(out / "config.json", config.to_dict() | {"limit": limit})
    summary = RenderSummary(
        items=len(records),
        rendered=sum(r.rendered for r in results),
        skipped=skipped,
        failed_pieces=failed,
        items_per_split=_count(records, "split"),
        hours_per_label=_hours(records),
        wall_seconds=time.perf_counter() - start,
    )
    write_data_card(out / "DATA_CARD.md", config, records, summary_failed=failed)
    return summary


def check_soundfonts(config: DataConfig) -> None:
    """Refuse to start when a configured soundfont is missing, naming its Debian package.

    Checked before anything is rendered: a worker that met the missing file would record each
    piece drawn onto it as failed, and a re-run skips failed pieces, so installing the package
    afterwards would not bring them back into the corpus.
    """
    missing = [sf for sf in config.soundfonts if not Path(sf.path).is_file()]
    if missing:
        files = ", ".join(sf.path for sf in missing)
        packages = " ".join(sorted({sf.package for sf in missing}))
        raise FileNotFoundError(
            f"soundfont {files} not found: install it with `apt-get install {packages}` (as "
            f"root; `make default-model` does) or drop it from the data config's [[soundfonts]]")


def _pending(jobs: list[Job], out: Path) -> tuple[list[Job], int]:
    """Jobs reduced to their variants without a record; fully done and failed pieces drop."""
    pending, skipped = [], 0
    for job in jobs:
        if failure_path(out, job.piece_id).exists():
            continue
        todo = tuple(v for v in job.variants if not record_path(out, v.item_id).exists())
        skipped += len(job.variants) - len(todo)
        if todo:
            pending.append(replace(job, variants=todo))
    return pending, skipped


_WORKER: Worker | None = None


def _init_worker(config: DataConfig, out: Path) -> None:
    global _WORKER
    _WORKER = Worker(config, out)


def _run_job(job: Job) -> JobResult:
    return _WORKER.run(job)


def _run(config: DataConfig, out: Path, jobs: list[Job]):
    """Yield one result per job as jobs finish. Worker processes are spawned, not forked: the
    parent may hold torch or fluidsynth state that must not be duplicated into children."""
    if not jobs:
        return
    if config.workers == 1:
        worker = Worker(config, out)
        for job in jobs:
            yield worker.run(job)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(config.workers, len(jobs)), initializer=_init_worker,
                      initargs=(config, out)) as pool:
        yield from pool.imap_unordered(_run_job, jobs, chunksize=1)


def _assemble(out: Path, planned: list[str]) -> list[dict]:
    """Validate every existing record of a planned item and write ``metadata.jsonl``."""
    records = []
    for item_id in sorted(planned):
        path = record_path(out, item_id)
        if path.exists():
            record = json.loads(path.read_text(encoding="utf-8"))
            validate_record(record)
            records.append(record)
    tmp = out / ".metadata.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out / "metadata.jsonl")
    return records


def _count(records: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r[key]] = counts.get(r[key], 0) + 1
    return dict(sorted(counts.items()))


def _hours(records: list[dict]) -> dict[str, float]:
    hours: dict[str, float] = {}
    for r in records:
        hours[r["label"]] = hours.get(r["label"], 0.0) + r["duration"] / 3600.0
    return dict(sorted(hours.items()))
