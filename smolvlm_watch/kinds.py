"""The model work each kind of file makes, and how its answers fold back into its sidecar record.

``work_for`` is the one place a kind meets its work: a photo is one unit; a video is one unit
per distinct frame sampling its tasks ask for; a document is its pages, a runtime batch at a
time (each finished page saved to the journal, so a restart resumes it), plus one unit for the
tasks that look at its first page (or its first pages together). The pipeline only asks a
``Work`` for units until it has none left, runs them, and folds the outcomes back: it never
branches on a kind, and nothing here names a plugin: a task says what it does on pages
(``Task.per_page``, ``page_fields``, ``combine_pages``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .config import DocumentConfig, ImageSettings, WatchConfig
from .engine import fingerprint
from .media import Limits, Media, MediaError, Opened, Sampling
from .media.document import Document, page_media, pages_media
from .tasks import GATE_SUFFIX, Outcome, Planned, TaskEntry, Unit, gate_probe, skipped, text_seen


class PageStore(Protocol):
    """Where a document's finished pages wait until the whole document is done (the journal)."""

    def pages_get(self, path: str, sha256: str, key: str) -> dict[int, dict[str, Any]]: ...
    def pages_put(self, path: str, sha256: str, key: str, index: int, record: dict[str, Any]) -> None: ...
    def pages_clear(self, path: str) -> None: ...


@dataclass(frozen=True)
class Folded:
    """What a file's work gave: the entries of the tasks that ran, and the sidecar's ``source``
    and other top-level sections of this kind."""

    tasks: dict[str, dict[str, Any]]
    source: dict[str, Any]
    extra: dict[str, Any]
    page_errors: list[str] = field(default_factory=list)
    pages_resumed: int = 0


@dataclass(frozen=True)
class Context:
    """What building a file's work needs beyond the file: limits, the watch's video sampling
    (with the engine's defaults), document settings, the page store and its progress report, and
    how many requests a batch holds."""

    limits: Limits
    watch: WatchConfig
    engine_sampling: Callable[[], dict[str, Any]]
    image_edge: Callable[[ImageSettings], int | None]
    document: DocumentConfig
    batch: Callable[[], int]
    store: PageStore | None = None
    on_page: Callable[[str, int, int], None] | None = None

    def sampling(self, task: dict[str, Any] | None = None) -> Sampling:
        """Video sampling: a task's own settings over the watch's over the loaded processor's."""
        v = {**asdict(self.watch.video), **(task or {})}
        defaults = self.engine_sampling()
        return Sampling(fps=v["fps"] or defaults["fps"], max_frames=v["max_frames"] or defaults["max_frames"],
                        mode=v["mode"], skip_black=v["skip_black"], timeout=v["timeout"], edge=defaults.get("edge"))


class Work(ABC):
    """One opened file's model work."""

    @abstractmethod
    def units(self) -> list[Unit]:
        """The units to run next; empty once the work is done."""

    @abstractmethod
    def fold(self, unit: Unit, outcomes: list[Outcome]) -> None:
        """Take one unit's outcomes back."""

    @abstractmethod
    def folded(self) -> Folded:
        """Everything the file's work gave, once ``units`` is empty."""

    def ahead(self) -> list[Unit]:
        """Units whose pixels may be prepared before their turn (in a prefetch thread)."""
        return []

    def finished(self) -> None:  # noqa: B027 - optional: most work keeps nothing for a resume
        """The file's sidecars are written: what was kept for a resume can go."""

    def close(self) -> None:  # noqa: B027 - optional: a decoded photo or video holds no file
        """Release the file (a document stays open until its last page is read)."""


def work_for(opened: Opened, todo: list[Planned], ctx: Context) -> Work:
    """The work of an opened file, by its kind."""
    if opened.kind == "document":
        return DocumentWork(opened, todo, ctx)
    if opened.kind == "video":
        return VideoWork(opened, todo, ctx)
    edges = [ctx.image_edge(p.spec.image) for p in todo]
    # the largest edge any task looks at (none when every task's answer was copied from a RAW's twin)
    edge = None if None in edges else max((e for e in edges if e is not None), default=None)
    return ImageWork(opened.image(ctx.limits, edge, pair=ctx.watch.raw_pairs == "prefer-jpeg"), todo)


class _Once(Work):
    """Units that run in one round, their outcomes gathered by task name."""

    def __init__(self, media: Media, units: list[Unit]):
        self.media, self._units = media, [u for u in units if u.tasks]
        self.entries: dict[str, dict[str, Any]] = {}

    def units(self) -> list[Unit]:
        units, self._units = self._units, []
        return units

    def fold(self, unit: Unit, outcomes: list[Outcome]) -> None:
        self.entries.update((o.name, o.data) for o in outcomes)

    def folded(self) -> Folded:
        return Folded(self.entries, self.media.info.as_dict(), dict(self.media.sidecar_extra))


class ImageWork(_Once):
    """A photo: every task about the one image, in one unit; a ``text-seen`` task (its ``gate``)
    in a second round, only where its gate question, asked in the first with the others, did
    not answer "no"."""

    def __init__(self, media: Media, todo: list[Planned]):
        self.gated = {p.task.name + GATE_SUFFIX: p for p in todo if p.gate is not None}
        first = [p for p in todo if p.gate is None] + [gate_probe(p) for p in self.gated.values()]
        super().__init__(media, [Unit(media, tuple(first))])
        self.answers: dict[str, str | None] = {}  # each gate question's answer, by its name
        self.asked: dict[str, Planned] = {}  # the gated tasks running in the second round

    def units(self) -> list[Unit]:
        units = super().units()
        if units or not self.gated:
            return units
        run = []
        for probe, p in self.gated.items():
            answer = self.answers.get(probe)
            if text_seen(answer, self.media):
                run.append(p)
            else:
                self.entries[p.task.name] = TaskEntry.gated_out(p, answer or "").as_json()
        self.gated, self.asked = {}, {p.task.name: p for p in run}
        return [Unit(self.media, tuple(run))] if run else []

    def fold(self, unit: Unit, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.name in self.gated:
                self.answers[o.name] = o.data.get("result")  # None when the question failed: the task runs
            elif o.name in self.asked:
                probe = o.name + GATE_SUFFIX
                self.entries[o.name] = {**o.data, "gate": {"prompt": self.asked[o.name].gate,
                                                           "answer": self.answers.get(probe)}}
            else:
                self.entries[o.name] = o.data

    def ahead(self) -> list[Unit]:
        return list(self._units)


class VideoWork(_Once):
    """A video: one unit per distinct frame sampling. A task with its own sampling (fewer or more
    frames than the watch's) sees its own frames, and its entry says which it saw."""

    def __init__(self, opened: Opened, todo: list[Planned], ctx: Context):
        own: dict[Sampling, list[Planned]] = {}
        for p in todo:
            own.setdefault(ctx.sampling(p.video), []).append(p)
        main = ctx.sampling()
        media = opened.video(main)
        units = [Unit(media, tuple(own.pop(main, [])))]
        units += [Unit(opened.video(sampling), tuple(tasks), "own") for sampling, tasks in own.items()]
        super().__init__(media, units)

    def fold(self, unit: Unit, outcomes: list[Outcome]) -> None:
        if unit.tag != "own":
            return super().fold(unit, outcomes)
        self.entries.update((o.name, {**o.data, "video": unit.media.sidecar_extra.get("video")}) for o in outcomes)


class DocumentWork(Work):
    """A PDF or multi-page TIFF: per-page tasks over every page, a runtime batch of pages at a
    time (rendered only when their turn comes), the others once on the first page, or on the
    first pages together (``document.pages: all``); finished pages saved as they complete and
    taken from the store on a resumed run."""

    def __init__(self, opened: Opened, todo: list[Planned], ctx: Context):
        self.opened, self.ctx = opened, ctx
        self.doc: Document = opened.document(ctx.limits)
        self.info = self.doc.source_info(opened.stat, opened.sha256)
        self.skips = {p.task.name: skipped(p, "document").data for p in todo if "document" not in p.task.media_kinds}
        self.once_entries: dict[str, dict[str, Any]] = {}
        accepting = [p for p in todo if "document" in p.task.media_kinds]
        self.per_page = [p for p in accepting if p.task.per_page or ctx.document.pages == "each"]
        self._once = tuple(p for p in accepting if p not in self.per_page)
        # the resume key of the journals written before this layout: per-page fingerprints and the dpi
        self.key = fingerprint(sorted(p.fingerprint for p in self.per_page), self.doc.limits.dpi)
        saved = ctx.store.pages_get(self.info.path, self.info.sha256, self.key) if ctx.store else {}
        self.records: dict[int, dict[str, Any]] = dict(saved)
        self.resumed = len(saved)
        self.next = 0

    def units(self) -> list[Unit]:
        units = [Unit(self._once_media(), self._once, "once")] if self._once else []
        self._once = ()
        step, n = self.ctx.batch(), self.doc.page_count
        while self.next < n and len(units) < step:  # pages done already (resumed) or unreadable take no slot
            i, self.next = self.next, self.next + 1
            if i in self.records:
                continue
            try:
                image, layer = self.doc.page(i)
            except MediaError as exc:
                self.records[i] = self._record(i, None, [], error=exc.reason.split(": ", 1)[-1])
                continue
            units.append(Unit(page_media(self.info, i, image, layer), tuple(self.per_page), i))
        return units

    def _once_media(self) -> Media:
        if self.ctx.document.pages == "all":
            count = min(self.doc.page_count, self.ctx.document.all_max_pages)
            return pages_media(self.info, [self.doc.page(i)[0] for i in range(count)])
        image, layer = self.doc.page(0)
        return page_media(self.info, 0, image, layer)

    def fold(self, unit: Unit, outcomes: list[Outcome]) -> None:
        if unit.tag == "once":
            self.once_entries.update((o.name, o.data) for o in outcomes)
            return
        index = unit.tag
        self.records[index] = record = self._record(index, unit.media, outcomes)
        if self.ctx.store is not None:
            self.ctx.store.pages_put(self.info.path, self.info.sha256, self.key, index, record)
        if self.ctx.on_page:
            self.ctx.on_page(self.info.path, len(self.records), self.doc.page_count)

    def _record(self, index: int, media: Media | None, outcomes: list[Outcome], error: str | None = None
                ) -> dict[str, Any]:
        """A page's entry in the sidecar's ``pages`` list: a task may put fields of its own in it
        (``page_fields``: OCR's text and its source); the others' entries go under ``tasks``."""
        rec: dict[str, Any] = {"page": index + 1}
        if media is not None:
            rec.update(width=media.info.width, height=media.info.height)
        rec["seconds"] = round(sum((o.data.get("seconds", 0.0) for o in outcomes), 0.0), 4)
        tasks = {p.task.name: p.task for p in self.per_page}
        own = {}
        for o in outcomes:
            fields = tasks[o.name].page_fields(o.data)
            if fields is None:
                own[o.name] = o.data
            else:
                rec.update(fields)
        if error:
            rec["error"] = error
        if own:
            rec["tasks"] = own
        return rec

    def folded(self) -> Folded:
        pages = [self.records[i] for i in range(self.doc.page_count)]
        seconds = sum(page.get("seconds", 0.0) for page in pages)
        paged = {p.task.name: TaskEntry.paged(p, p.task.combine_pages(pages), seconds, len(pages)).as_json()
                 for p in self.per_page}
        first = pages[0] if pages else {}
        source = {**self.info.as_dict(), "pages": self.doc.page_count, "width": first.get("width", 0),
                  "height": first.get("height", 0)}
        errors = [f"page {p['page']}: {p['error']}" for p in pages if "error" in p]
        return Folded({**self.skips, **paged, **self.once_entries}, source, {"pages": pages}, errors, self.resumed)

    def finished(self) -> None:
        if self.ctx.store is not None:
            self.ctx.store.pages_clear(self.info.path)

    def close(self) -> None:
        self.doc.close()
        self.opened.close()
