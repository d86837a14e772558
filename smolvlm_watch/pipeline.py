"""One file through the whole path: sidecar check → media → tasks → writers.

Used by both ``process`` and the daemon's worker, so a file gets the same sidecars whichever way
it arrives. A file whose sidecar already holds current results for every task (same content hash,
same fingerprints) is skipped without decoding it; under the ``merge`` policy only the tasks that
are missing or stale run, and the others' results are kept.
"""

from __future__ import annotations

import contextvars
import functools
import errno
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Iterable, Iterator

import structlog

from .config import Config, DocumentConfig, OutputConfig, WatchConfig
from .media import Limits, MediaError, Opened, Sampling, open_media
from .media.document import Document, page_media, page_record, pages_media
from .plugins import Registry
from .engine import Engine, Interrupted, fingerprint
from .sidecar import PENDING, SidecarError, SidecarRecord, Target, WriteSet, read_json
from .tasks import Planned, plan, preprocess, run_tasks, run_tasks_many, skipped


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str  # done | skipped | failed
    error: str | None = None
    transient: bool = False
    outputs: dict[str, str] = field(default_factory=dict)  # the file's sidecar set, name -> sha256
    seconds: float = 0.0
    tasks_run: tuple[str, ...] = ()
    sha256: str | None = None
    pages_resumed: int = 0  # a document's pages taken from the journal instead of run again


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
    """A file ready for the model: what to run, where results go, and the decoded media
    (None for a document, whose pages are rendered from ``opened`` as they are needed)."""

    path: Path
    watch: WatchConfig
    target: Target
    todo: list[Planned]
    kept_from: dict[str, Any] | None  # the sidecar whose results are kept (same content)
    media: Any
    start: float
    sha256: str
    main: list[Planned]  # the tasks that run on ``media``
    extra: tuple[tuple[list[Planned], Any], ...] = ()  # tasks with their own video sampling, and their media
    opened: Opened | None = None  # a document's input, open until its pages are done
    existing: dict[str, Any] | None = None  # our sidecar as found, whatever content it describes


TRANSIENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EIO, errno.ENOMEM)


def _guarded(path: Path, start: float, step: Callable[[], Any]) -> Any:
    """Run one file's step; its failures become that file's FileResult, never its neighbours'.
    Expected ones say what happened; anything else (a bug, a decoder raising what it should
    not) is an internal error, retried and then quarantined, with its traceback in the log."""
    try:
        return step()
    except Interrupted:
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


log = structlog.get_logger("smolvlm_watch.pipeline")


class PageStore(Protocol):
    """Where a document's finished pages wait until the whole document is done (the journal)."""

    def pages_get(self, path: str, sha256: str, key: str) -> dict[int, dict[str, Any]]: ...
    def pages_put(self, path: str, sha256: str, key: str, index: int, record: dict[str, Any]) -> None: ...
    def pages_clear(self, path: str) -> None: ...


class Pipeline:
    """Processes files with one shared runtime and the registered tasks and writers."""

    def __init__(self, config: Config, registry: Registry, runtime: Engine):
        self.config = config
        self.registry = registry
        self.runtime = runtime
        self.limits = Limits(max_pixels=config.media.max_pixels, max_bytes=config.media.max_bytes,
                             dpi=config.document.dpi, max_pages=config.document.max_pages,
                             max_page_pixels=config.document.max_page_pixels)
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

    def sampling(self, watch: WatchConfig, task: dict[str, Any] | None = None) -> Sampling:
        """Video sampling: a task's own settings over the watch's over the loaded processor's."""
        v = {**asdict(watch.video), **(task or {})}
        defaults = self.runtime.video_sampling() if v["fps"] is None or v["max_frames"] is None else {}
        return Sampling(fps=v["fps"] or defaults["fps"], max_frames=v["max_frames"] or defaults["max_frames"],
                        mode=v["mode"], skip_black=v["skip_black"], timeout=v["timeout"])

    def process(self, path: str | Path, watch: WatchConfig, force: bool = False,
                pages: PageStore | None = None) -> FileResult:
        """Process one file. ``pages`` (the journal) keeps a long document's finished pages, so a
        restart resumes it instead of starting over."""
        prepared = self.prepare(path, watch, force)
        if isinstance(prepared, FileResult):
            return prepared
        return self.run([prepared], pages)[0]

    def process_many(self, jobs: Iterable[FileJob], pages: PageStore | None = None,
                     on_batch: Callable[[list[Path]], None] | None = None,
                     stop: Callable[[], bool] | None = None) -> Iterator[tuple[FileJob, FileResult]]:
        """Process jobs in order while the next ones are read and decoded in the background (a
        job's known content hash spares hashing the file again); yields each job with its result.

        At most ``prefetch()`` decoded files wait ahead of the model (memory stays bounded
        whatever the folder's size), and the ones already decoded when the model is free are run
        together, so the runtime can batch across files. A batch never waits for a file that is
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
                                                job.force, job.sha256)))

        try:
            refill()
            while window and not (stop and stop()):
                ready = [_take(window.popleft())]
                while window and window[0][1].done() and len(ready) < self.runtime.max_batch():
                    ready.append(_take(window.popleft()))
                refill()
                if on_batch:
                    on_batch([job.path for job, _ in ready])
                ran = iter(self.run([r for _, r in ready if isinstance(r, Prepared)], pages))
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
        return self.config.runtime.prefetch or max(4, self.runtime.max_batch())

    def prepare(self, path: str | Path, watch: WatchConfig, force: bool = False,
                sha256: str | None = None) -> Prepared | FileResult:
        """Everything before the model: the sidecar check, hashing (unless the caller knows the
        hash), decoding. A FileResult when there is nothing to run (skipped) or the file failed."""
        path = Path(path)
        start = time.perf_counter()
        return _guarded(path, start, lambda: self._prepare(path, watch, force, sha256, start))

    def _prepare(self, path: Path, watch: WatchConfig, force: bool, sha: str | None,
                 start: float) -> Prepared | FileResult:
        output: OutputConfig = watch.output
        target = Target.for_media(path, output, watch.path)
        if (problem := target.name_problem()) is not None:
            raise SidecarError(problem)
        existing = read_json(target.json_path) if "json" in watch.outputs else None
        if existing is not None and output.policy == "skip" and not force:
            return FileResult(str(path), "skipped", seconds=time.perf_counter() - start)
        opened = open_media(path, self.limits, sha)
        try:
            prepared = self._decode(opened, path, watch, force, target, existing, start)
        except BaseException:
            opened.close()
            raise
        if not isinstance(prepared, Prepared) or prepared.opened is None:
            opened.close()
        return prepared

    def _decode(self, opened: Opened, path: Path, watch: WatchConfig, force: bool, target: Target,
                existing: dict[str, Any] | None, start: float) -> Prepared | FileResult:
        sha = opened.sha256
        # an unfinished write set (a crash mid-commit) or a page that failed is redone whole
        same_content = (existing is not None and PENDING not in existing and not _page_errors(existing)
                        and (existing.get("source") or {}).get("sha256") == sha)
        planned = self.planned(watch)
        kept = existing if same_content else None
        todo = planned if force or kept is None else [p for p in planned if not _current(kept, p)]
        if not todo:  # results current: the set is rendered again from them, no model run
            assert existing is not None
            moved = {"path": str(path), "size": opened.stat.st_size, "mtime": opened.stat.st_mtime}
            outputs = self._write(SidecarRecord.from_doc(existing, moved), target, existing, watch)
            return FileResult(str(path), "skipped", seconds=time.perf_counter() - start, sha256=sha, outputs=outputs)
        if opened.kind == "document":  # documents render their pages as the model needs them
            return Prepared(path, watch, target, todo, kept, None, start, sha, todo, opened=opened, existing=existing)
        if opened.kind == "image":
            media = opened.image(self.limits)
            if self.runtime.prepares_ahead:
                preprocess(media, todo, self.runtime)
            return Prepared(path, watch, target, todo, kept, media, start, sha, todo, existing=existing)
        own: dict[Sampling, list[Planned]] = {}
        for p in todo:
            own.setdefault(self.sampling(watch, p.video), []).append(p)
        main = own.pop(self.sampling(watch), [])
        media = opened.video(self.sampling(watch))
        extra = tuple((tasks, opened.video(sampling)) for sampling, tasks in own.items())
        return Prepared(path, watch, target, todo, kept, media, start, sha, main, extra, existing=existing)

    def run(self, items: list[Prepared], pages: PageStore | None = None) -> list[FileResult]:
        """Run prepared files; files with the same tasks share one runtime call."""
        results: dict[int, FileResult] = {}
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, item in enumerate(items):
            if item.media is None:
                results[i] = _guarded(item.path, item.start, functools.partial(self._document, item, pages))
            else:
                groups.setdefault(tuple(p.fingerprint for p in item.main), []).append(i)
        for idx in groups.values():
            batch = [items[i] for i in idx]
            outcomes = run_tasks_many([b.media for b in batch], batch[0].main, self.runtime)
            for i, item, outs in zip(idx, batch, outcomes):
                data = {o.name: o.data for o in outs}
                for tasks, media in item.extra:  # a task with its own video sampling saw its own frames
                    for o in run_tasks(media, tasks, self.runtime):
                        data[o.name] = {**o.data, "video": media.sidecar_extra.get("video")}
                results[i] = _guarded(item.path, item.start, functools.partial(
                    self._finish, item, data, item.media.info.as_dict(), dict(item.media.sidecar_extra)))
        return [results[i] for i in range(len(items))]

    def _finish(self, item: Prepared, outcomes: dict[str, dict], source: dict[str, Any], extra: dict[str, Any],
                page_errors: list[str] | None = None) -> FileResult:
        """Merge with the kept results, write every output, and say how it went."""
        watch = item.watch
        kept = dict(item.kept_from["tasks"]) if item.kept_from and watch.output.policy == "merge" else {}
        record = SidecarRecord(source=source, model=self.runtime.info().as_dict(), tasks={**kept, **outcomes},
                               extra=extra)
        written = self._write(record, item.target, item.existing, watch)
        errors = [f"{name}: {data['error']}" for name, data in outcomes.items() if "error" in data]
        # A task error (out of memory, a flaky plugin) may pass next time: retried, then quarantined.
        # A page that cannot be rendered will not render next time either.
        return FileResult(
            str(item.path), "failed" if errors or page_errors else "done",
            "; ".join(errors + (page_errors or [])) or None, transient=bool(errors),
            outputs=written, seconds=time.perf_counter() - item.start,
            tasks_run=tuple(p.task.name for p in item.todo), sha256=source["sha256"],
        )

    def _document(self, item: Prepared, store: PageStore | None) -> FileResult:
        """A PDF or multi-page TIFF: per-page tasks run over the pages in batches (rendered only
        as needed), the others on the first page, every page, or the first pages at once."""
        path = item.path
        cfg = self.config.document
        assert item.opened is not None
        try:
            doc = item.opened.document(self.limits)
            try:
                info = doc.source_info(item.opened.stat, item.sha256)
                runner = _DocumentRun(self, doc, info, store, self.on_page)
                outcomes = runner.run(item.todo, cfg)
            finally:
                doc.close()
        finally:
            item.opened.close()
        first = runner.pages[0] if runner.pages else {}
        source = {**info.as_dict(), "pages": doc.page_count, "width": first.get("width", 0),
                  "height": first.get("height", 0)}
        errors = [f"page {p['page']}: {p['error']}" for p in runner.pages if "error" in p]
        result = self._finish(item, outcomes, source, {"pages": runner.pages}, errors)
        if store is not None:
            store.pages_clear(str(path))
        return replace(result, pages_resumed=runner.resumed)

    def _write(self, record: SidecarRecord, target: Target, existing: dict[str, Any] | None,
               watch: WatchConfig) -> dict[str, str]:
        """Every writer stages its files, ``json`` last so it records what the others wrote; then
        they are committed as one write set over what ``existing`` (our sidecar as found) says
        we wrote before."""
        target = replace(target, writes=WriteSet.after(existing))
        written: dict[Path, str] = {}
        names = [n for n in watch.outputs if n != "json"] + [n for n in watch.outputs if n == "json"]
        for name in names:
            if name == "json":
                record = replace(record, outputs={p.name: h for p, h in written.items()})
            written.update(self.registry.writers[name].obj.write(record, target))
        json_path = target.json_path if "json" in watch.outputs else None
        return target.writes.commit(json_path, existing or record.stub())


def _take(entry: tuple[FileJob, Future[Prepared | FileResult]]) -> tuple[FileJob, Prepared | FileResult]:
    job, future = entry
    return job, future.result()


def _close_unused(future: Future[Prepared | FileResult]) -> None:
    """A file decoded ahead but never run (a stop came first): its input is closed."""
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        if isinstance(result, Prepared) and result.opened is not None:
            result.opened.close()


def _page_errors(doc: dict[str, Any]) -> bool:
    return any("error" in page for page in doc.get("pages") or ())


def _current(existing: dict[str, Any], p: Planned) -> bool:
    entry = (existing.get("tasks") or {}).get(p.task.name) or {}
    return entry.get("fingerprint") == p.fingerprint and "error" not in entry


class _DocumentRun:
    """One document's pass: pages in batches of the runtime's size, finished pages saved to the
    store as they complete and taken from it on a resumed run."""

    def __init__(self, pipeline: Pipeline, doc: Document, info, store: PageStore | None,
                 on_page: Callable[[str, int, int], None] | None):
        self.pipeline, self.doc, self.info, self.store, self.on_page = pipeline, doc, info, store, on_page
        self.pages: list[dict[str, Any]] = []
        self.resumed = 0

    def run(self, todo: list[Planned], cfg: DocumentConfig) -> dict[str, dict[str, Any]]:
        outcomes = {p.task.name: skipped(p, "document").data for p in todo if "document" not in p.task.media_kinds}
        accepting = [p for p in todo if "document" in p.task.media_kinds]
        per_page = [p for p in accepting if p.task.name == "ocr" or cfg.pages == "each"]
        once = [p for p in accepting if p not in per_page]
        self._pages(per_page)
        for p in per_page:
            outcomes[p.task.name] = self._summary(p)
        if once:
            outcomes.update({o.name: o.data for o in run_tasks(self._once_media(cfg), once, self.pipeline.runtime)})
        return outcomes

    def _pages(self, per_page: list[Planned]) -> None:
        n, path = self.doc.page_count, self.info.path
        key = fingerprint(sorted(p.fingerprint for p in per_page), self.doc.limits.dpi)
        saved = self.store.pages_get(path, self.info.sha256, key) if self.store else {}
        records: dict[int, dict[str, Any]] = dict(saved)
        self.resumed = len(saved)
        step = self.pipeline.runtime.max_batch()
        for first in range(0, n, step):
            medias, indices = [], []
            for i in range(first, min(n, first + step)):
                if i in records:
                    continue
                try:
                    image, layer = self.doc.page(i)
                except MediaError as exc:
                    records[i] = page_record(i, None, {}, 0.0, error=exc.reason.split(": ", 1)[-1])
                    continue
                medias.append(page_media(self.info, i, image, layer))
                indices.append(i)
            results = run_tasks_many(medias, per_page, self.pipeline.runtime) if per_page else [[]] * len(medias)
            for i, media, outs in zip(indices, medias, results):
                data = {o.name: o.data for o in outs}
                records[i] = page_record(i, media, data, sum(d.get("seconds", 0.0) for d in data.values()))
                if self.store is not None:
                    self.store.pages_put(path, self.info.sha256, key, i, records[i])
            if self.on_page:
                self.on_page(path, min(n, first + step), n)
        self.pages = [records[i] for i in range(n)]

    def _summary(self, p: Planned) -> dict[str, Any]:
        """A per-page task's entry: OCR joins the pages' text with form feeds, as pdftotext does."""
        if p.task.name == "ocr":
            result: Any = "\f".join(page.get("ocr", "") for page in self.pages)
        else:
            result = [(page.get("tasks") or {}).get(p.task.name, {}).get("result") for page in self.pages]
        return {"result": result, "prompt": p.spec.prompt,
                "generation": {**p.spec.generation.as_dict(), "image": p.spec.image.as_dict()},
                "plugin": p.plugin, "plugin_version": p.plugin_version,
                "seconds": round(sum(page.get("seconds", 0.0) for page in self.pages), 4),
                "fingerprint": p.fingerprint, "pages": len(self.pages)}

    def _once_media(self, cfg: DocumentConfig):
        if cfg.pages == "all":
            count = min(self.doc.page_count, cfg.all_max_pages)
            return pages_media(self.info, [self.doc.page(i)[0] for i in range(count)])
        image, layer = self.doc.page(0)
        return page_media(self.info, 0, image, layer)
