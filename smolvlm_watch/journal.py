"""The durable journal: one SQLite row per watched file, in WAL mode, queried by named methods.

States: ``pending → running → done | failed | quarantined``, and ``gone`` for a file that
vanished (its row keeps the content hash, so a rename can take its sidecars along). A daemon
killed mid-job leaves a ``running`` row; the next start (which holds the exclusive lock, so no
other daemon can own it) puts it back to ``pending`` and counts the interruption as an attempt,
so a file that crashes or wedges the daemon every time ends quarantined. Sidecar writes are
atomic and idempotent, so running a job twice never leaves a half-written or duplicate result.

Paths: a name that is valid UTF-8 is stored as TEXT (readable with the sqlite3 shell); any other
(an old Latin-1 archive, an SMB share) as a BLOB of its bytes, so no file name can stop the
journal. "Under a folder" is one exact, case-sensitive rule on whole path components
(``under``), never LIKE: ``/photos/my_album`` does not match ``/photos/myXalbum``.

Time: retry delays and leases run on the journal's clock, which is monotonic while the daemon
runs and resumes from the last time it saw at the next start, so a wall-clock step (NTP, a dead
RTC battery) neither stalls nor hastens a retry. Wall-clock times are kept as hints for people
(``finished``, ``updated``).

``synchronous=NORMAL``: an application crash loses nothing; a power cut may lose the last few
``done`` rows, which only means those files are processed again.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Literal

from . import jsontext
from .search import Passage
from .search_index import SearchIndex
from .store import JournalError, JournalLocked, Store, from_db, locked, starting, to_db, under

State = Literal["pending", "running", "done", "failed", "quarantined", "gone"]
STATES: tuple[State, ...] = ("pending", "running", "done", "failed", "quarantined", "gone")
INTERRUPTED = "interrupted: the daemon stopped or crashed while running it"
LIVE, BACKFILL = 0, 1
SCHEMA_VERSION = 3
KNOWN_PAGE = 5000  # rows per read when a rescan goes through every file of a watch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    watch TEXT NOT NULL,
    size INTEGER,
    mtime REAL,
    sha256 TEXT,
    fingerprint TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    priority INTEGER NOT NULL DEFAULT 0,
    force INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    lease_until REAL,
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, next_attempt, id);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs (sha256);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    key TEXT NOT NULL,
    page INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (path, page)
);
"""

# Each entry upgrades a journal from the version before it, in place (PRAGMA user_version).
_MIGRATIONS = (
    # 1: what a done job wrote (name -> sha256), so a rescan can see a sidecar deleted by hand;
    #    an edit that landed while the job ran (the job is redone, not recorded done).
    ("ALTER TABLE jobs ADD COLUMN outputs TEXT", "ALTER TABLE jobs ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0"),
    # 2: the search index (search.py): one row per passage, keyed by path (a rename moves them,
    #    a file gone drops out of results by its job's state), full text in FTS5 with trigrams.
    ("CREATE TABLE passages (id INTEGER PRIMARY KEY, path TEXT NOT NULL, watch TEXT NOT NULL, task TEXT NOT NULL,"
     " kind TEXT, page INTEGER, timestamp REAL, created REAL NOT NULL, text TEXT NOT NULL)",
     "CREATE INDEX passages_path ON passages (path)",
     "CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='id', tokenize='trigram')",
     "CREATE TRIGGER passages_added AFTER INSERT ON passages BEGIN"
     " INSERT INTO passages_fts (rowid, text) VALUES (new.id, new.text); END",
     "CREATE TRIGGER passages_removed AFTER DELETE ON passages BEGIN"
     " INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
     "CREATE TRIGGER jobs_forgotten AFTER DELETE ON jobs BEGIN DELETE FROM passages WHERE path = old.path; END"),
    # 3: when a file's passages were last taken (a sidecar newer than that, written by a `process`
    #    beside the daemon or kept while the journal was restored from a backup, is read again).
    #    And what `status` and the panel count (done in the last hour) by an index, not a scan.
    ("ALTER TABLE jobs ADD COLUMN indexed REAL", "CREATE INDEX jobs_finished ON jobs (state, finished)"),
)




@dataclass(frozen=True)
class Job:
    id: int
    path: str
    watch: str
    size: int | None
    mtime: float | None
    sha256: str | None
    fingerprint: str | None
    state: State
    priority: int
    force: bool
    attempts: int
    next_attempt: float
    last_error: str | None
    finished: float | None = None
    outputs: dict[str, str] | None = None  # what the done job wrote, name -> sha256 (None: not recorded)
    indexed: float | None = None  # when its passages were last taken (wall clock)

    @property
    def interrupted(self) -> bool:
        """It was running when a daemon died, and has not run since."""
        return self.last_error == INTERRUPTED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        outputs = row["outputs"]
        return cls(id=row["id"], path=from_db(row["path"]), watch=from_db(row["watch"]), size=row["size"],
                   mtime=row["mtime"], sha256=row["sha256"], fingerprint=row["fingerprint"], state=row["state"],
                   priority=row["priority"], force=bool(row["force"]), attempts=row["attempts"],
                   next_attempt=row["next_attempt"], last_error=row["last_error"], finished=row["finished"],
                   outputs=json.loads(outputs) if outputs else None,
                   indexed=row["indexed"] if "indexed" in row.keys() else None)  # a schema-2 journal read as it is


@dataclass(frozen=True)
class Finished:
    """What a job that ran leaves in the journal (``Journal.done``): the content it described,
    the settings its results carry, what it wrote and what of it is searchable."""

    sha256: str | None
    fingerprint: str
    seconds: float  # of processing (0 when the results were found current)
    size: int | None = None
    mtime: float | None = None
    outputs: dict[str, str] | None = None  # name -> sha256 of each file written
    passages: list[Passage] | None = None  # None: leave the index as it is
    kind: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried (the config's ``state`` section)."""

    max_attempts: int = 5
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter, for the ``attempts``-th failure."""
        return min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)


class Journal:
    """The queue and history of every file, shared by the supervisor and the worker thread.

    ``exclusive``: the daemon's handle, holding the lock no second daemon can take.
    ``readonly``: for commands that only look (``status``, ``explain``); it never creates a
    journal, and a missing one is a clear error. The journal is known by its real path, every
    symlink resolved: a second daemon reaching the same file by another spelling (a symlinked
    ``state.db`` or state folder) finds the same lock and is refused.
    """

    def __init__(self, path: str | Path, exclusive: bool = False, readonly: bool = False):
        self.path = Path(os.path.realpath(path))
        self.readonly = readonly
        self._lock_fd: int | None = None
        self.store = Store(self.path)  # the connection, shared with the search index
        self._x, self._tx = self.store.x, self.store.tx
        self.index = SearchIndex(self.store)
        self._mono0, self._base = time.monotonic(), time.time()
        if readonly:
            self._open_readonly()
        else:
            self._open(exclusive)
        self._base = max(self._base, float(self.meta("clock") or 0))

    @property
    def db(self) -> sqlite3.Connection | None:
        """The connection itself, for bulk tools (bench/scale.py's generated library)."""
        return self.store.db

    # --- opening -------------------------------------------------------------------------------

    def _open(self, exclusive: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the state folder {self.path.parent} ({exc.strerror or exc}); "
                               "set state.db to a writable place") from None
        if exclusive:
            self._take_lock()
        try:
            self.store.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.store.db.row_factory = sqlite3.Row
            self.store.db.execute("PRAGMA journal_mode=WAL")
            self.store.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(self.store.explain(exc)) from None

    def _open_readonly(self) -> None:
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path}: no daemon has run with this config yet "
                               "(start it with `smolvlm-watch run`, or check state.db)")
        try:
            self.store.db = self._connect_readonly()
            columns = {row["name"] for row in self.store.db.execute("PRAGMA table_info(jobs)")}
            if "outputs" not in columns:
                raise JournalError(f"the journal {self.path} is from an older smolvlm-watch: start the daemon "
                                   "once to upgrade it in place")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(self.store.explain(exc)) from None

    def _connect_readonly(self) -> sqlite3.Connection:
        """Read-only, beside a daemon that writes. On a read-only disk, where SQLite cannot
        create the WAL index a reader needs, nothing can be writing: read it as immutable."""
        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "mode=ro&immutable=1"):
            db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            try:
                db.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "unable to open" not in str(exc) or mode.endswith("immutable=1"):
                    raise
        raise AssertionError("unreachable")

    def _migrate(self) -> None:
        """Create a new journal, or upgrade an older one in place (``_MIGRATIONS``), in one
        transaction: two processes opening a new journal at once do it once."""
        assert self.store.db is not None
        with self._tx():
            version = self.store.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"the journal {self.path} was written by a newer smolvlm-watch (schema {version}, "
                                   f"this one knows {SCHEMA_VERSION}); upgrade smolvlm-watch, or give this one its "
                                   "own state.db")
            if version == SCHEMA_VERSION:
                return
            fresh = self.store.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone() is None
            for sql in _SCHEMA.split(";"):  # a new journal's tables; no-ops on an existing one
                if sql.strip():
                    self.store.db.execute(sql)
            for statements in _MIGRATIONS if fresh else _MIGRATIONS[version:]:
                for sql in statements:
                    self.store.db.execute(sql)
            self.store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open the lock file {lock_path} ({exc.strerror or exc}); give the daemon's "
                               f"user write access to {self.path.parent}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalLocked(f"another smolvlm-watch daemon (pid {holder}) is using the state database "
                                f"{self.path}; stop it first, or give this one its own state.db") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    @locked
    def close(self) -> None:
        if self.store.db is not None:
            try:
                self._save_clock()
            except JournalError:
                pass  # a read-only, full or broken journal: nothing more to keep
            self.store.db.close()
            self.store.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the journal's clock -------------------------------------------------------------------

    def now(self) -> float:
        """Journal time: monotonic while this process runs, never behind what it showed before."""
        return self._base + (time.monotonic() - self._mono0)

    def _save_clock(self) -> None:
        """Persist the clock, so the next start resumes from here even if the wall clock went back."""
        if self.store.db is not None and not self.readonly:
            self._x("INSERT INTO meta (key, value) VALUES ('clock', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (repr(self.now()),))

    # --- queueing ------------------------------------------------------------------------------

    @locked
    def enqueue(self, path: str, watch: str, size: int, mtime: float, priority: int = LIVE,
                force: bool = False) -> bool:
        """Queue a file unless the journal already has it, unchanged, queued or done. A change to
        a file the worker is running marks the job, which is then redone instead of recorded
        done. Returns True when the file was (re)queued."""
        now = time.time()
        row = self._row(path)
        if row is None:
            self._x("INSERT INTO jobs (path, watch, size, mtime, state, priority, force, created, updated)"
                    " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (to_db(path), to_db(watch), size, mtime, priority, int(force), now, now))
            return True
        unchanged = row["size"] == size and row["mtime"] == mtime
        if unchanged and not force and row["state"] != "gone":
            if row["state"] == "pending" and priority < row["priority"]:
                self._x("UPDATE jobs SET priority = ? WHERE id = ?", (priority, row["id"]))
            return False
        if row["state"] == "running":
            self._x("UPDATE jobs SET dirty = 1, priority = MIN(priority, ?) WHERE id = ?", (priority, row["id"]))
            return True
        self._x("UPDATE jobs SET watch = ?, size = ?, mtime = ?, state = 'pending', priority = ?, force = ?,"
                " attempts = 0, next_attempt = 0, last_error = NULL, dirty = 0, updated = ? WHERE id = ?",
                (to_db(watch), size, mtime, priority, int(force or row["force"]), now, row["id"]))
        return True

    @locked
    def requeue(self, path: str, why: str | None = None) -> bool:
        """Queue one known file again (its sidecars are missing, say), whatever its state but
        running; ``why`` is kept as its last error until it runs."""
        return self._requeue("path = ?", (to_db(path),), why) == 1

    @locked
    def requeue_failed(self, under_path: str | None = None) -> int:
        """``retry``: failed and quarantined files (below ``under_path``) back to pending."""
        where, params = under(under_path)
        return self._requeue(f"state IN ('failed', 'quarantined') AND {where}", params)

    @locked
    def requeue_stale(self, watch: str, fingerprint: str, under_path: str | None = None) -> int:
        """``backfill --stale``: done files of ``watch`` whose results came from other settings."""
        where, params = under(under_path)
        return self._requeue(f"state = 'done' AND watch = ? AND fingerprint != ? AND {where}",
                             (to_db(watch), fingerprint, *params))

    def _requeue(self, where: str, params: tuple[Any, ...], why: str | None = None) -> int:
        cur = self._x(f"UPDATE jobs SET state = 'pending', attempts = 0, next_attempt = 0, priority = {BACKFILL},"
                      f" last_error = ?, updated = ? WHERE state != 'running' AND ({where})",
                      (why, time.time(), *params))
        return cur.rowcount

    @locked
    def recover(self, max_attempts: int) -> int:
        """At start (we hold the lock): jobs a dead daemon left running go back to pending, and
        the interruption counts as an attempt, so a file that kills or wedges the daemon every
        time ends quarantined instead of in a restart loop. (The daemon then runs each such job
        alone, so the files that were merely in flight beside the culprit are not blamed again.)"""
        cur = self._x(
            "UPDATE jobs SET attempts = attempts + 1, lease_until = NULL, updated = ?, dirty = 0,"
            " last_error = ?, state = CASE WHEN attempts + 1 >= ? THEN 'quarantined' ELSE 'pending' END"
            " WHERE state = 'running'", (time.time(), INTERRUPTED, max_attempts))
        return cur.rowcount

    @locked
    def lease(self, seconds: float) -> Job | None:
        """Take the next due job: live before backfill, oldest first; expired leases count as due."""
        now = self.now()
        with self._tx():
            # Two lookups, each walking jobs_queue in its own order and stopping at the first row:
            # one query ORing both states sorted every due row per lease (5.6 ms with 30,000 pending).
            rows = [self._x(f"SELECT * FROM jobs WHERE state = ? AND {due} ORDER BY priority, next_attempt, id LIMIT 1",
                            (state, now)).fetchone()
                    for state, due in (("pending", "next_attempt <= ?"), ("running", "lease_until < ?"))]
            row = min((r for r in rows if r is not None), key=lambda r: (r["priority"], r["next_attempt"], r["id"]),
                      default=None)
            if row is None:
                return None
            self._x("UPDATE jobs SET state = 'running', lease_until = ?, updated = ? WHERE id = ?",
                    (now + seconds, time.time(), row["id"]))
        return Job.from_row(row)

    @locked
    def next_due(self) -> float | None:
        """Seconds until the next pending job is due (0: one is due now), None when none waits."""
        firsts = [self._x("SELECT MIN(next_attempt) FROM jobs WHERE state = 'pending' AND priority = ?",
                          (priority,)).fetchone()[0] for priority in (LIVE, BACKFILL)]  # each: one index seek
        due = min((f for f in firsts if f is not None), default=None)
        return None if due is None else max(0.0, due - self.now())

    @locked
    def release(self, job_id: int) -> None:
        """Give a leased job back untouched (shutdown mid-job)."""
        self._x("UPDATE jobs SET state = 'pending', lease_until = NULL, dirty = 0 WHERE id = ? AND state = 'running'",
                (job_id,))

    @locked
    def done(self, job_id: int, finished: Finished) -> State:
        """Record a job done, with what it wrote and, in the same transaction, the searchable
        passages of its results; a job whose file changed while it ran is queued again (live)
        instead. Returns the new state."""
        f = finished
        with self._tx():
            self._done(job_id, f.sha256, f.fingerprint, f.seconds, f.size, f.mtime, f.outputs)
            if f.passages is not None:
                row = self._x("SELECT path, watch FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None:
                    self.index.replace(row["path"], row["watch"], f.kind, f.passages)
        return self._state(job_id)

    def _done(self, job_id: int, sha256: str | None, fingerprint: str, seconds: float, size: int | None,
              mtime: float | None, outputs: dict[str, str] | None) -> None:
        now = time.time()
        self._x(
            "UPDATE jobs SET state = CASE dirty WHEN 1 THEN 'pending' ELSE 'done' END, sha256 = ?, fingerprint = ?,"
            " seconds = ?, finished = ?, lease_until = NULL, last_error = NULL, force = 0, updated = ?,"
            " size = CASE dirty WHEN 1 THEN NULL ELSE COALESCE(?, size) END,"
            " mtime = CASE dirty WHEN 1 THEN NULL ELSE COALESCE(?, mtime) END,"
            " priority = CASE dirty WHEN 1 THEN ? ELSE priority END, next_attempt = 0,"
            " attempts = CASE dirty WHEN 1 THEN 0 ELSE attempts END,"
            " outputs = ?, dirty = 0 WHERE id = ?",
            (sha256, fingerprint, seconds, now, now, size, mtime, LIVE,
             jsontext.dumps(outputs) if outputs is not None else None, job_id))

    @locked
    def adopt(self, old_path: str, job_id: int, sha256: str, fingerprint: str, size: int, mtime: float,
              outputs: dict[str, str]) -> None:
        """A renamed file takes over its old name's record: its sidecars were moved, its
        passages follow it, the old name is forgotten; one transaction. The work stays counted
        when it was done (a rename is no new processing, nor the loss of the old)."""
        with self._tx():
            row = self._x("SELECT path FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                self.index.moved(to_db(old_path), row["path"])
            old = self._x("SELECT seconds, finished FROM jobs WHERE path = ?", (to_db(old_path),)).fetchone()
            self._x("DELETE FROM jobs WHERE path = ?", (to_db(old_path),))
            self._done(job_id, sha256, fingerprint, (old["seconds"] or 0.0) if old else 0.0, size, mtime, outputs)
            if old is not None and old["finished"] is not None:
                self._x("UPDATE jobs SET finished = ? WHERE id = ?", (old["finished"], job_id))

    @locked
    def failed(self, job_id: int, error: str, transient: bool, policy: RetryPolicy) -> State:
        """Record a failure: transient ones retry with exponential backoff and jitter until
        ``max_attempts`` (then quarantine); permanent ones fail at once. A job whose file
        changed while it ran is queued again instead, fresh. Returns the new state."""
        row = self._x("SELECT attempts, dirty FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is not None and row["dirty"]:
            self._x("UPDATE jobs SET state = 'pending', attempts = 0, next_attempt = 0, priority = ?, dirty = 0,"
                    " size = NULL, mtime = NULL, lease_until = NULL, last_error = NULL, updated = ? WHERE id = ?",
                    (LIVE, time.time(), job_id))
            return "pending"
        attempts = (row["attempts"] if row else 0) + 1
        state: State
        if not transient:
            state, next_attempt = "failed", 0.0
        elif attempts >= policy.max_attempts:
            state, next_attempt = "quarantined", 0.0
        else:
            state, next_attempt = "pending", self.now() + policy.delay(attempts)
        now = time.time()
        self._x("UPDATE jobs SET state = ?, attempts = ?, next_attempt = ?, last_error = ?, lease_until = NULL,"
                " finished = ?, updated = ? WHERE id = ?",
                (state, attempts, next_attempt, error, now if state != "pending" else None, now, job_id))
        return state

    @locked
    def mark_gone(self, job_id: int) -> None:
        self._x("UPDATE jobs SET state = 'gone', lease_until = NULL, updated = ? WHERE id = ?", (time.time(), job_id))

    @locked
    def mark_gone_under(self, folder: str) -> int:
        """Every known file at or below ``folder`` is gone (the folder was moved or deleted)."""
        where, params = under(folder)
        cur = self._x(f"UPDATE jobs SET state = 'gone', lease_until = NULL, updated = ? "
                      f"WHERE state NOT IN ('gone', 'running') AND {where}", (time.time(), *params))
        return cur.rowcount

    @locked
    def forget(self, path: str) -> None:
        self._x("DELETE FROM jobs WHERE path = ?", (to_db(path),))

    # --- reading -------------------------------------------------------------------------------

    @locked
    def get(self, path: str) -> Job | None:
        row = self._row(path)
        return Job.from_row(row) if row else None

    @locked
    def by_sha(self, sha256: str) -> list[Job]:
        return self._jobs("sha256 = ? AND state IN ('done', 'gone')", (sha256,))

    @locked
    def seen(self, watch: str) -> dict[str, tuple[int | None, float | None]]:
        """Every file of ``watch`` that is not gone, with the size and mtime it was queued at:
        what a rescan's walk compares against in memory, one query for the whole watch."""
        rows = self._x("SELECT path, size, mtime FROM jobs WHERE watch = ? AND state != 'gone'", (to_db(watch),))
        return {from_db(r["path"]): (r["size"], r["mtime"]) for r in rows}

    def known(self, watch: str) -> Iterator[Job]:
        """Every file of ``watch`` that is not gone: what a rescan checks against the disk. Read
        ``KNOWN_PAGE`` rows at a time (a million Jobs at once would be a gigabyte), each page
        under the lock on its own, so a write between pages is never held up for the whole watch."""
        after = 0
        while page := self._known_page(watch, after):
            yield from page
            after = page[-1].id

    @locked
    def _known_page(self, watch: str, after: int) -> list[Job]:
        return self._jobs("id > ? AND watch = ? AND state != 'gone'", (after, to_db(watch)), limit=KNOWN_PAGE)

    @locked
    def same_stem(self, path: str) -> list[Job]:
        """The other files in ``path``'s folder with its stem (``IMG_1.DNG`` and ``IMG_1.JPG``):
        the ones that may share a sidecar named after the stem (``IMG_1.xmp``, ``IMG_1.txt``)."""
        p = Path(path)
        where, params = starting(str(p.with_name(p.stem + ".")))
        return [j for j in self._jobs(f"path != ? AND {where}", (to_db(path), *params))
                if Path(j.path).parent == p.parent and Path(j.path).stem == p.stem]

    @locked
    def knows(self, under_path: str) -> bool:
        """Whether any file at or below ``under_path`` is in the journal."""
        where, params = under(under_path)
        return self._x(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", params).fetchone() is not None

    def daemon_running(self) -> bool:
        """Whether a daemon holds this journal's lock now (``status`` asks; it never takes it)."""
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @locked
    def gone_before(self, when: float, under_path: str | None = None) -> list[Job]:
        """Files gone since before ``when`` (wall clock): their sidecars are orphans."""
        where, params = under(under_path)
        return self._jobs(f"state = 'gone' AND updated < ? AND {where}", (when, *params))

    @locked
    def running(self) -> list[Job]:
        return self._jobs("state = 'running'", ())

    @locked
    def recent(self, limit: int) -> list[Job]:
        """The files whose state changed last, newest first (the web page's "Recent")."""
        rows = self._x("SELECT * FROM jobs ORDER BY updated DESC LIMIT ?", (limit,)).fetchall()
        return [Job.from_row(r) for r in rows]

    @locked
    def done_per_hour(self, now: float, hours: int) -> list[int]:
        """Files processed in each of the last ``hours`` hours, oldest first."""
        out = [0] * hours
        rows = self._x("SELECT CAST((? - finished) / 3600 AS INTEGER) AS ago, COUNT(*) AS n FROM jobs"
                       " WHERE state = 'done' AND seconds > 0 AND finished > ? GROUP BY ago",
                       (now, now - hours * 3600)).fetchall()
        for row in rows:
            if 0 <= row["ago"] < hours:
                out[hours - 1 - row["ago"]] = row["n"]
        return out

    @locked
    def failures(self) -> list[Job]:
        return self._jobs("state IN ('failed', 'quarantined')", ())

    @locked
    def all(self) -> list[Job]:
        return self._jobs("1", ())

    @locked
    def counts(self) -> dict[State, int]:
        out: dict[State, int] = {s: 0 for s in STATES}
        for row in self._x("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[row["state"]] = row["n"]
        return out

    @locked
    def done_since(self, since: float) -> tuple[int, float]:
        """Files processed (not merely found current) since ``since`` (wall clock), and their seconds."""
        row = self._x("SELECT COUNT(*) AS n, COALESCE(SUM(seconds), 0) AS s FROM jobs"
                      " WHERE state = 'done' AND finished >= ? AND seconds > 0", (since,)).fetchone()
        return row["n"], row["s"]

    @locked
    def ask_rescan(self, under_path: str | None) -> None:
        """``rescan [SUBPATH]``: a request the daemon takes at its next look (``take_rescan``);
        several before it looks add up."""
        asked = set(json.loads(self.meta("rescan") or "[]"))
        self.set_meta("rescan", jsontext.dumps(sorted(asked | {under_path or ""})))

    @locked
    def take_rescan(self) -> list[str | None]:
        """The rescans asked for since the last look (None: every watch), and forget them."""
        with self._tx():
            row = self._x("SELECT value FROM meta WHERE key = 'rescan'").fetchone()
            if row is None:
                return []
            self._x("DELETE FROM meta WHERE key = 'rescan'")
        return [p or None for p in json.loads(row["value"])]

    @locked
    def set_meta(self, key: str, value: str) -> None:
        self._x("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value))
        if key != "clock":
            self._save_clock()

    @locked
    def meta(self, key: str) -> str | None:
        row = self._x("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    # --- a long document's finished pages, kept until the whole document is done ------------------

    @locked
    def pages_get(self, path: str, sha256: str, key: str) -> dict[int, dict[str, Any]]:
        rows = self._x("SELECT page, data FROM pages WHERE path = ? AND sha256 = ? AND key = ?",
                       (to_db(path), sha256, key))
        return {row["page"]: json.loads(row["data"]) for row in rows}

    @locked
    def pages_put(self, path: str, sha256: str, key: str, index: int, record: dict[str, Any]) -> None:
        self._x("INSERT OR REPLACE INTO pages (path, sha256, key, page, data) VALUES (?, ?, ?, ?, ?)",
                (to_db(path), sha256, key, index, jsontext.dumps(record)))

    @locked
    def pages_clear(self, path: str) -> None:
        self._x("DELETE FROM pages WHERE path = ?", (to_db(path),))

    # --- plumbing ------------------------------------------------------------------------------

    def _row(self, path: str) -> sqlite3.Row | None:
        return self._x("SELECT * FROM jobs WHERE path = ?", (to_db(path),)).fetchone()

    def _jobs(self, where: str, params: tuple[Any, ...], limit: int = -1) -> list[Job]:
        return [Job.from_row(r) for r in self._x(f"SELECT * FROM jobs WHERE {where} ORDER BY id LIMIT ?",
                                                 (*params, limit))]

    def _state(self, job_id: int) -> State:
        row = self._x("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["state"] if row else "gone"
