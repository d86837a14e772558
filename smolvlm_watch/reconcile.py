"""Keeping the journal true to the disk.

The watchers report what they see; this decides what it means. A scan of a watch queues new and
changed files, marks vanished ones gone, and queues again a done file whose sidecars went
missing (deleted by hand, a backup restored without them); it removes the temp files of writes
that will never finish, and counts what it passed over for ``status``. Nothing is marked gone
while the watch's folder cannot be trusted (``ArmedWatch.check``: an unmounted share leaves an
empty folder behind, which is not "every file deleted"). A known file that turns up under a new
name has its sidecars moved along instead of being run again.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import jsontext
from .config import Config, WatchConfig
from .journal import BACKFILL, Job, Journal
from .search import PassageSource, from_sidecar
from .atomic import TEMP_PREFIX, sweep_temp
from .sidecar import Target, missing_output, relocate
from .watcher import ArmedWatch, ScanReport, scan, walk


FEW = 2000  # known files a rescan reads one by one; more, and it reads the watch's rows in one query
INDEX_SLACK = 2.0  # seconds between a sidecar's write and its journal row's, in one commit


class Reconciler:
    def __init__(self, journal: Journal, log: Any, known: Callable[[], Mapping[str, PassageSource]],
                 reader: Journal | None = None):
        self.journal, self.log = journal, log
        # The whole-watch reads of a scan (every row of a big library) through a connection of their
        # own: they never hold the lock of the one the worker and the live files write through.
        self.reader = reader or journal
        self.known = known  # the tasks that say what of a result is searchable (the registry's, after a reload)
        self.missed_total = 0  # files rescans found that no live event reported, since the start

    def enqueue(self, watch: WatchConfig, path: Path, priority: int) -> bool:
        """Queue a settled or scanned file (a vanished one is left to the scan)."""
        try:
            st = path.stat()
        except OSError:
            return False
        return self.journal.enqueue(str(path), str(watch.path), st.st_size, st.st_mtime, priority)

    def scan(self, armed: ArmedWatch, under: Path | None = None) -> int:
        """Reconcile one watch with its folder (or only the folder ``under`` inside it); returns
        how many files were queued. The walk is compared with the journal's rows in memory (one
        query for the watch): an unchanged file costs its stat, no SQL."""
        if not armed.check():
            return 0
        watch, report = armed.watch, ScanReport()
        known = self.reader.seen(str(watch.path))
        queued, missed, walked = 0, [], set()
        tree = watch if under is None else replace(watch, path=under)
        memo = armed.memo if under is None else None  # a rescan asked for a subpath lists it all
        if memo is not None:
            memo.begin()
        for entry in walk(tree, armed.filter, report, memo):  # a folder as it was yields nothing
            walked.add(entry.path)
            if self._changed(known, entry) and self.enqueue(watch, path := Path(entry.path), BACKFILL):
                queued += 1
                if armed.unreported(path):
                    missed.append(path)
        self._missed(armed, missed)
        if watch.output.output_dir is not None:
            report.temp_removed += self._sweep(watch.output.output_dir)
        if armed.check():  # still there after the walk: what is missing now is really gone
            recalled = memo.recalled if memo is not None else set()
            queued += self._settle_known(armed, walked, under, self._to_settle(watch, known, recalled), recalled)
        if under is None:
            self.journal.set_meta(f"scan:{watch.path}", jsontext.dumps(report.as_dict()))
        if report.temp_removed:
            self.log.info("temp_files_removed", watch=str(watch.path), count=report.temp_removed)
        return queued

    def _missed(self, armed: ArmedWatch, missed: list[Path]) -> None:
        """A file the rescan found new, settled and never reported live means the observer is
        deaf (a library change, a kernel limit): counted, and the health check acts on it."""
        if missed:
            armed.missed += len(missed)
            self.missed_total += len(missed)
            self.log.warning("live_events_missed", watch=str(armed.watch.path), files=len(missed),
                             example=str(missed[0]), missed_so_far=armed.missed)

    @staticmethod
    def _changed(known: dict[str, tuple[int | None, float | None]], entry: os.DirEntry[str]) -> bool:
        """Whether a walked file is new or changed since the journal saw it (then it is queued)."""
        seen = known.get(entry.path)
        if seen is None:
            return True
        try:
            st = entry.stat()
        except OSError:
            return False  # gone meanwhile: the settle below sees it
        return seen != (st.st_size, st.st_mtime)

    def _to_settle(self, watch: WatchConfig, known: dict[str, Any], recalled: set[str]) -> Iterable[Job]:
        """The known files a walk must settle: all of them, but for the files of folders it
        recalled unchanged when their sidecars lie beside them (one deleted or rewritten would
        have changed the folder). A few are read one by one, many in one query."""
        if not recalled or watch.output.output_dir is not None:
            return self.reader.known(str(watch.path))
        paths = [p for p in known if os.path.dirname(p) not in recalled]
        if len(paths) > FEW:
            return (j for j in self.reader.known(str(watch.path)) if os.path.dirname(j.path) not in recalled)
        return (j for j in map(self.reader.get, paths) if j is not None)

    def _settle_known(self, armed: ArmedWatch, walked: set[str], under: Path | None, jobs: Iterable[Job],
                      recalled: set[str]) -> int:
        """Known files the walk did not find are gone (but for those of folders it recalled: they
        hold the names they held); a done file whose sidecar set is not whole is queued again."""
        requeued, watch = 0, armed.watch
        for job in jobs:
            if under is not None and not Path(job.path).is_relative_to(under):
                continue
            if not armed.reachable(job.path):
                continue  # below a share that is not mounted now: out of reach, not gone
            if job.path not in walked and os.path.dirname(job.path) not in recalled and not os.path.lexists(job.path):
                self.journal.mark_gone(job.id)
                continue
            if job.state != "done":
                continue
            target = Target.for_media(Path(job.path), watch.output, watch.path)
            if (missing := missing_output(target, job.outputs, "json" in watch.outputs)) is not None:
                requeued += self.journal.requeue(job.path, f"its sidecar {missing} is missing")
            else:
                self._index_if_newer(job, watch, target)
        return requeued

    def _index_if_newer(self, job: Job, watch: WatchConfig, target: Target) -> None:
        """A done file's sidecar written after its passages were taken (a `process` run beside
        the daemon, a journal restored from an older backup) is read into the index again, so
        search answers what the sidecar says now."""
        if "json" not in watch.outputs:
            return
        try:
            written = os.stat(os.path.join(target.folder, target.json_name)).st_mtime
        except OSError:
            return
        if written <= (job.indexed or job.finished or 0) + INDEX_SLACK:
            return
        outcome, kind, found = from_sidecar(Path(job.path), watch, self.known())
        if outcome == "indexed":
            self.journal.index.put(job.path, str(watch.path), kind, found)
            self.log.info("index_refreshed", path=job.path, reason="its sidecar is newer than the index")

    @staticmethod
    def missing(job: Job, watch: WatchConfig) -> str | None:
        """The first file of a done job's sidecar set that is gone, or None."""
        target = Target.for_media(Path(job.path), watch.output, watch.path)
        return missing_output(target, job.outputs, "json" in watch.outputs)

    @staticmethod
    def _sweep(top: Path) -> int:
        removed = 0
        for folder, _, files in os.walk(top):
            if any(name.startswith(TEMP_PREFIX) for name in files):
                removed += len(sweep_temp(Path(folder)))
        return removed

    def gone(self, armed: ArmedWatch) -> None:
        """Paths the observer saw moved away or deleted: gone at once (a folder with everything
        below it), unless the watch's folder itself cannot be trusted right now."""
        paths = []
        while armed.gone:
            paths.append(armed.gone.popleft())
        if paths and armed.check():
            for path in paths:
                if armed.reachable(str(path)) and not os.path.lexists(path):
                    self.journal.mark_gone_under(str(path))

    def on_dir(self, armed: ArmedWatch, folder: Path) -> None:
        """A folder appeared (moved in, a mount back): its files come with no events of their own."""
        if folder != armed.watch.path and not armed.filter.accepts_dir(folder):
            return
        for path in scan(replace(armed.watch, path=folder), armed.filter):
            armed.tracker.touch(path)

    def adopt_renamed(self, config: Config, path: Path, watch: WatchConfig, fingerprint: str, job_id: int,
                      st: os.stat_result, sha: str) -> bool:
        """A file (with no sidecar of its own) whose content the journal knows under a vanished
        name gets that name's sidecars, without a model run. True when it did."""
        for old in self.journal.by_sha(sha):
            if old.path == str(path) or os.path.lexists(old.path) or old.fingerprint != fingerprint:
                continue
            old_watch = config.watch_for(Path(old.path)) or watch
            new = Target.for_media(path, watch.output, watch.path)
            if new.name_problem() is not None:
                return False  # the pipeline says why, once
            moved = relocate(Target.for_media(Path(old.path), old_watch.output, old_watch.path), new,
                             {"path": str(path), "size": st.st_size, "mtime": st.st_mtime})
            if moved:
                self.journal.adopt(old.path, job_id, sha, fingerprint, st.st_size, st.st_mtime, moved)
                self.log.info("job_done", status="renamed", renamed_from=old.path, outputs=len(moved))
                return True
        return False
