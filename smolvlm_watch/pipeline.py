"""One file through the whole path: sidecar check → open_media → work units → engine → fold →
writers.

Used by both ``process`` and the daemon's worker, so a file gets the same sidecars whichever way
it arrives. A file whose sidecar already holds current results for every task (same content hash,
same fingerprints) is not run again (its set is only written out again from the sidecar where a
file of it is missing); under the ``merge`` policy only the tasks that are missing or stale run,
and the others' results are kept. What a file's kind asks of the model is ``kinds``' business:
here every file is a ``Work`` that gives units until it has none, and the units of all the
files of a batch go to the engine in one call per round.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import structlog

from .config import Config, WatchConfig
from .engine import Engine, Interrupted, ModelLoadError, fingerprint
from .kinds import Context, PageStore, Work, work_for
from . import prompts
from .media import MediaError, open_media
from .media.capture import Capture
from .places import context_record
from .plugins import Registry
from .search import Passage, passages
from .sidecar import PENDING, SidecarError, SidecarRecord, Target, WriteSet, current, read_json, writing
from .tasks import Planned, Unit, plan, preprocess, run_units

log = structlog.get_logger("smolvlm_watch.pipeline")

Status = Literal["done", "skipped", "failed"]
TRANSIENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EIO, errno.ENOMEM)


@dataclass(frozen=True)
class FileResult:
    path: str
    status: Status
    error: str | None = None
    transient: bool = False
    outputs: dict[str, str] = field(default_factory=dict)  # the file's sidecar set, name -> sha256
    seconds: float = 0.0
    tasks_run: tuple[str, ...] = ()
    sha256: str | None = None
    pages_resumed: int = 0  # a document's pages taken from the journal instead of run again
    passages: tuple[Passage, ...] | None = None  # what the search index holds of its results (None: unchanged)
    kind: str | None = None


@dataclass(frozen=True)
class FileJob:
    """A file to process, with the watch whose settings apply. ``sha256``: its content hash when
    the caller computed it already (the daemon's rename check), so it is not hashed again."""

    path: Path
    watch: WatchConfig
    force: bool = False
    sha256: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A file ready for the model: what runs, where results go, and its work."""

    path: Path
    watch: WatchConfig
    target: Target
    todo: list[Planned]
    kept_from: dict[str, Any] | None  # the sidecar whose results are kept (same content)
    existing: dict[str, Any] | None  # our sidecar as found, whatever content it describes
    work: Work
    start: float
    copied: dict[str, dict[str, Any]] = field(default_factory=dict)  # a RAW's entries taken from its twin
    capture: Capture | None = None  # what the file says of its taking (recorded as the sidecar's ``context``)


def _guarded(path: Path, start: float, step: Callable[[], Any]) -> Any:
    """Run one file's step; its failures become that file's FileResult, never its neighbours'.
    Expected ones say what happened; anything else (a bug, a decoder raising what it should
    not) is an internal error, retried and then quarantined, with its traceback in the log. A
    model that cannot load is the run's failure, never one file's: it stops the run with its
    one clear message (``process``), as it stops ``run`` at start."""
    try:
        return step()
    except (Interrupted, ModelLoadError):
        raise
    except MediaError as exc:
        return FileResult(str(path), "failed", exc.reason, transient=exc.transient,
                          seconds=time.perf_counter() - start)
    except (SidecarError, OSError) as exc:
        transient = isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
        return FileResult(str(path), "failed", str(exc), transient=transient, seconds=time.perf_counter() - start)
    except Exception as exc:  # one file's trouble is that file's failure, never its neighbours'
        log.exception("file_crashed", path=str(path), error=str(exc))
        return FileResult(str(path), "failed", f"internal error: {type(exc).__name__}: {exc}", transient=True,
                          seconds=time.perf_counter() - start)


class Pipeline:
    """Processes files with one shared engine and the registered tasks and writers."""

    def __init__(self, config: Config, registry: Registry, engine: Engine):
        self.config = config
        self.registry = registry
        self.engine = engine
        self.limits = config.limits()
        self.on_page: Callable[[str, int, int], None] | None = None  # progress: (path, done, total)

    def planned(self, watch: WatchConfig) -> list[Planned]:
        """The watch's tasks with their effective settings and fingerprints."""
        model = self.config.model
        out = []
        for name in watch.tasks:
            provided = self.registry.tasks[name]
            out.append(plan(provided.obj, self.config.task_config(name, watch), provided.plugin, provided.version,
                            model.source, model.revision, model.image))
        return out

    def fingerprint(self, watch: WatchConfig) -> str:
        """One hash over every task's fingerprint: what the journal compares for staleness."""
        return fingerprint(sorted(p.fingerprint for p in self.planned(watch)), sorted(watch.outputs))

    def process(self, path: str | Path, watch: WatchConfig, force: bool = False,
                pages: PageStore | None = None) -> FileResult:
        """Process one file. ``pages`` (the journal) keeps a long document's finished pages, so a
        restart resumes it instead of starting over."""
        prepared = self.prepare(path, watch, force, pages=pages)
        if isinstance(prepared, FileResult):
            return prepared
        return self.run([prepared])[0]

    def process_many(self, jobs: Iterable[FileJob], pages: PageStore | None = None,
                     on_batch: Callable[[list[Path]], None] | None = None,
                     stop: Callable[[], bool] | None = None) -> Iterator[tuple[FileJob, FileResult]]:
        """Process jobs in order while the next ones are read and decoded in the background (a
        job's known content hash spares hashing the file again); yields each job with its result.

        At most ``prefetch()`` decoded files wait ahead of the model (memory stays bounded
        whatever the folder's size), and the ones already decoded when the model is free are run
        together, so the engine can batch across files. A batch never waits for a file that is
        still being decoded, beyond the first, and ``jobs`` is only asked for more when there is
        room: a live file is not held back for a full batch. ``on_batch`` hears which files run
        next; once ``stop()`` is true no further batch starts (the jobs taken but not run are the
        caller's to give back). The prefetch threads are not waited for on the way out: one stuck
        in a decoder must not hold the caller."""
        jobs = iter(jobs)
        window: deque[tuple[FileJob, Future[Prepared | FileResult]]] = deque()
        pool = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) // 2), thread_name_prefix="prefetch")

        def refill() -> None:
            while len(window) < self.prefetch():
                job = next(jobs, None)
                if job is None:
                    return
                # the prefetch thread logs with the job's context (path, job id) as the caller bound it
                window.append((job, pool.submit(contextvars.copy_context().run, self.prepare, job.path, job.watch,
                                                job.force, job.sha256, pages)))

        try:
            refill()
            while window and not (stop and stop()):
                ready = [_take(window.popleft())]
                while window and window[0][1].done() and len(ready) < self.engine.max_batch():
                    ready.append(_take(window.popleft()))
                refill()
                if on_batch:
                    on_batch([job.path for job, _ in ready])
                ran = iter(self.run([r for _, r in ready if isinstance(r, Prepared)]))
                for job, r in ready:
                    yield job, r if isinstance(r, FileResult) else next(ran)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for _, future in window:
                future.add_done_callback(_close_unused)

    def prefetch(self) -> int:
        """Files decoded ahead of the model: ``runtime.prefetch``, else enough to fill a batch (4
        on CPU; on a GPU its batch size, known once the model is loaded, so a big GPU batch is
        not starved by a small window)."""
        return self.config.runtime.prefetch or max(4, self.engine.max_batch())

    def prepare(self, path: str | Path, watch: WatchConfig, force: bool = False, sha256: str | None = None,
                pages: PageStore | None = None) -> Prepared | FileResult:
        """Everything before the model: the sidecar check, hashing (unless the caller knows the
        hash), decoding. A FileResult when there is nothing to run (skipped) or the file failed."""
        path = Path(path)
        start = time.perf_counter()
        return _guarded(path, start, lambda: self._prepare(path, watch, force, sha256, pages, start))

    def _prepare(self, path: Path, watch: WatchConfig, force: bool, sha: str | None, pages: PageStore | None,
                 start: float) -> Prepared | FileResult:
        target = Target.for_media(path, watch.output, watch.path)
        if (problem := target.name_problem()) is not None:
            raise SidecarError(problem)
        existing = read_json(target.json_path) if "json" in watch.outputs else None
        if existing is not None and watch.output.policy == "skip" and not force:
            return FileResult(str(path), "skipped", seconds=time.perf_counter() - start)
        opened = open_media(path, self.limits, sha)
        try:
            # an unfinished write set (a crash mid-commit) or a page that failed is redone whole
            kept = existing if (existing is not None and PENDING not in existing and not _page_errors(existing)
                                and (existing.get("source") or {}).get("sha256") == opened.sha256) else None
            planned = self.planned(watch)
            # read once, from the header or container: before the currency check when a prompt needs it
            capture = opened.capture() if any(p.templated for p in planned) else None
            planned = self._for_file(planned, capture)
            todo = planned if force or kept is None else [p for p in planned if not _current(kept, p)]
            if not todo:  # results current: the set is rendered again from them, no model run
                assert kept is not None
                moved = {"path": str(path), "size": opened.stat.st_size, "mtime": opened.stat.st_mtime}
                record, outputs = self._write(SidecarRecord.from_doc(kept, moved), target, existing, watch)
                return FileResult(str(path), "skipped", seconds=time.perf_counter() - start,
                                  sha256=opened.sha256, outputs=outputs, passages=self._passages(record),
                                  kind=record.source.get("kind"))
            copied = _from_twin(opened.pair, watch, todo) if watch.raw_pairs == "prefer-jpeg" else {}
            capture = capture or opened.capture()
            work = work_for(opened, [p for p in todo if p.task.name not in copied], self._context(watch, pages))
        except BaseException:
            opened.close()
            raise
        if self.engine.prepares_ahead:
            preprocess(work.ahead(), self.engine)
        return Prepared(path, watch, target, todo, kept, existing, work, start, copied, capture)

    def _for_file(self, planned: list[Planned], capture: Capture | None) -> list[Planned]:
        """The tasks as this file asks them: prompts with placeholders filled with what the file
        records (read before anything is decoded: the rendered prompt decides whether its
        results are current)."""
        if not any(p.templated for p in planned):
            return planned
        known = prompts.values(capture, self.config.context.gps)
        return [p.for_file(known) for p in planned]

    def _context(self, watch: WatchConfig, pages: PageStore | None) -> Context:
        return Context(self.limits, watch, self.engine.video_sampling, self.engine.image_edge, self.config.document,
                       self.engine.max_batch, pages, self.on_page)

    def run(self, items: list[Prepared]) -> list[FileResult]:
        """Run prepared files: round after round, the units every file still has go to the engine
        in one call, and a file is finished as soon as its work has no more."""
        results: dict[int, FileResult] = {}
        active = dict(enumerate(items))
        try:
            while active:
                batch: list[tuple[int, Unit]] = []
                for i, item in list(active.items()):
                    units = _guarded(item.path, item.start, item.work.units)
                    if isinstance(units, list) and units:
                        batch += [(i, u) for u in units]
                        continue
                    results[i] = units if isinstance(units, FileResult) else self._complete(item)
                    item.work.close()
                    del active[i]
                if batch:
                    self._round(batch, active, results)
        finally:
            for item in active.values():
                item.work.close()
        return [results[i] for i in range(len(items))]

    def _round(self, batch: list[tuple[int, Unit]], active: dict[int, Prepared], results: dict[int, FileResult]
               ) -> None:
        outcomes = run_units([u for _, u in batch], self.engine)
        for (i, unit), outs in zip(batch, outcomes):
            if i in active:
                failed = _guarded(active[i].path, active[i].start, functools.partial(active[i].work.fold, unit, outs))
                if isinstance(failed, FileResult):
                    results[i] = failed
                    active.pop(i).work.close()

    def _complete(self, item: Prepared) -> FileResult:
        return _guarded(item.path, item.start, functools.partial(self._finished, item))

    def _finished(self, item: Prepared) -> FileResult:
        """The file's result once its sidecars are written (what its work kept for a resume then
        goes; a write that raised keeps it)."""
        result = self._finish(item)
        item.work.finished()
        return result

    def _finish(self, item: Prepared) -> FileResult:
        """Merge with the kept results, write every output, and say how it went."""
        folded = item.work.folded()
        watch = item.watch
        kept = dict(item.kept_from["tasks"]) if item.kept_from and watch.output.policy == "merge" else {}
        context = context_record(item.capture, self.config.context.gps)
        record = SidecarRecord(source=folded.source, model=self.engine.info().as_dict(),
                               tasks={**kept, **item.copied, **folded.tasks},
                               extra={**folded.extra, **({"context": context} if context else {})})
        record, written = self._write(record, item.target, item.existing, watch, {*item.copied, *folded.tasks})
        errors = [f"{name}: {data['error']}" for name, data in folded.tasks.items() if "error" in data]
        # A task error (out of memory, a flaky plugin) may pass next time: retried, then quarantined.
        # A page that cannot be rendered will not render next time either.
        return FileResult(
            str(item.path), "failed" if errors or folded.page_errors else "done",
            "; ".join(errors + folded.page_errors) or None, transient=bool(errors),
            outputs=written, seconds=time.perf_counter() - item.start,
            tasks_run=tuple(p.task.name for p in item.todo if p.task.name not in item.copied),
            sha256=folded.source["sha256"],
            pages_resumed=folded.pages_resumed,
            passages=self._passages(record), kind=record.source.get("kind"),
        )

    def _passages(self, record: SidecarRecord) -> tuple[Passage, ...]:
        """The searchable passages of a record, as each task declares them."""
        pages = record.extra.get("pages") or []
        return tuple(passages(record.tasks, pages, self.registry.task_objects, record.extra.get("context")))

    def _write(self, record: SidecarRecord, target: Target, existing: dict[str, Any] | None,
               watch: WatchConfig, ran: Iterable[str] = ()) -> tuple[SidecarRecord, dict[str, str]]:
        """Every writer stages its files, ``json`` last so it records what the others wrote; then
        they are committed as one write set. In turn with any other writer of this set (the
        daemon, a ``process`` beside it): the sidecar is read again as it is now, what another
        run added since ``existing`` was read is kept (``ran``: what this run computed, which
        wins), and what it wrote counts as ours. Returns the record written and the set."""
        with writing(target.media):
            if "json" in watch.outputs:
                on_disk = read_json(target.json_path)
                if on_disk != existing:
                    record = current(record, on_disk, ran) if watch.output.policy == "merge" else record
                    existing = on_disk
            record = replace(record, roles=self._roles(record, watch))
            target = replace(target, writes=WriteSet.after(existing, watch.output.mode))
            written: dict[Path, str] = {}
            names = [n for n in watch.outputs if n != "json"] + [n for n in watch.outputs if n == "json"]
            for name in names:
                if name == "json":
                    record = replace(record, outputs={p.name: h for p, h in written.items()})
                written.update(self.registry.writers[name].obj.write(record, target))
            json_path = target.json_path if "json" in watch.outputs else None
            return record, target.writes.commit(json_path, existing or record.stub())


    def _roles(self, record: SidecarRecord, watch: WatchConfig) -> dict[str, str]:
        """Which of the record's tasks fills each role: the first in the watch's order, then the rest."""
        known = self.registry.task_objects
        roles: dict[str, str] = {}
        for name in [*watch.tasks, *record.tasks]:
            role = known[name].role if name in known and name in record.tasks else None
            if role is not None:
                roles.setdefault(role, name)
        return roles


def _take(entry: tuple[FileJob, Future[Prepared | FileResult]]) -> tuple[FileJob, Prepared | FileResult]:
    job, future = entry
    return job, future.result()


def _close_unused(future: Future[Prepared | FileResult]) -> None:
    """A file decoded ahead but never run (a stop came first): its input is closed."""
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        if isinstance(result, Prepared):
            result.work.close()


def _from_twin(twin: Path | None, watch: WatchConfig, todo: list[Planned]) -> dict[str, dict[str, Any]]:
    """A RAW's answers taken from its JPEG twin's sidecar (``raw_pairs: prefer-jpeg``): the
    entries that are current for the same task settings, when that sidecar describes the twin
    as it is now. The rest run on the twin's pixels, so both files get the same answers."""
    if twin is None:
        return {}
    doc = read_json(Target.for_media(twin, watch.output, watch.path).json_path)
    if doc is None or PENDING in doc:
        return {}
    source, st = doc.get("source") or {}, twin.stat()
    if source.get("size") != st.st_size or source.get("mtime") != st.st_mtime:
        return {}
    return {p.task.name: doc["tasks"][p.task.name] for p in todo if _current(doc, p)}


def _page_errors(doc: dict[str, Any]) -> bool:
    return any("error" in page for page in doc.get("pages") or ())


def _current(existing: dict[str, Any], p: Planned) -> bool:
    entry = (existing.get("tasks") or {}).get(p.task.name) or {}
    return entry.get("fingerprint") == p.fingerprint and "error" not in entry
