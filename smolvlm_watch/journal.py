"""The durable journal: one SQLite row per watched file, in WAL mode.

States: ``pending → running → done | failed | quarantined``, and ``gone`` for a file that
vanished (its row keeps the content hash, so a rename can take its sidecars along). A daemon
killed mid-job leaves a ``running`` row; the next start (which holds the exclusive lock, so no
other daemon can own it) puts it back to ``pending`` and counts the interruption as an attempt,
so a file that crashes or wedges the daemon every time ends quarantined. Sidecar writes are
atomic and idempotent, so running a job twice never leaves a half-written or duplicate result.

``synchronous=NORMAL``: an application crash loses nothing; a power cut may lose the last few
``done`` rows, which only means those files are processed again.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("pending", "running", "done", "failed", "quarantined", "gone")
INTERRUPTED = "interrupted: the daemon stopped or crashed while running it"
LIVE, BACKFILL = 0, 1

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


class JournalError(Exception):
    """The state database cannot be used; the message names it and the fix."""


class JournalLocked(JournalError):
    """Another daemon owns this state database."""


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    watch: str
    size: int | None
    mtime: float | None
    sha256: str | None
    fingerprint: str | None
    state: str
    priority: int
    force: bool
    attempts: int
    next_attempt: float
    last_error: str | None
    finished: float | None = None

    @property
    def interrupted(self) -> bool:
        """It was running when a daemon died, and has not run since."""
        return self.last_error == INTERRUPTED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(id=row["id"], path=row["path"], watch=row["watch"], size=row["size"], mtime=row["mtime"],
                   sha256=row["sha256"], fingerprint=row["fingerprint"], state=row["state"],
                   priority=row["priority"], force=bool(row["force"]), attempts=row["attempts"],
                   next_attempt=row["next_attempt"], last_error=row["last_error"], finished=row["finished"])


def _locked(method):
    """Serialise access: the watcher's thread and the worker share one connection, and a
    transaction must never swallow the other thread's statements."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._mu:
            return method(self, *args, **kwargs)

    return wrapper


class Journal:
    """The queue and history of every file, shared by the supervisor and the worker thread."""

    def __init__(self, path: str | Path, exclusive: bool = False):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the state folder {self.path.parent} ({exc.strerror or exc}); "
                               "set state.db to a writable place") from None
        self._lock_fd: int | None = None
        self._mu = threading.RLock()
        if exclusive:
            self._take_lock()
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"the state database {self.path} cannot be used ({exc}); move it away and "
                               "start again: the journal is rebuilt by the startup scan (current "
                               "sidecars are recognised and skipped)") from None

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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

    @_locked
    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- queueing ------------------------------------------------------------------------------

    @_locked
    def enqueue(self, path: str, watch: str, size: int, mtime: float, priority: int = LIVE,
                force: bool = False) -> bool:
        """Queue a file unless the journal already has it, unchanged, queued or done.
        Returns True when the file was (re)queued."""
        now = time.time()
        row = self.db.execute("SELECT * FROM jobs WHERE path = ?", (path,)).fetchone()
        if row is None:
            self.db.execute(
                "INSERT INTO jobs (path, watch, size, mtime, state, priority, force, created, updated)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)", (path, watch, size, mtime, priority, int(force), now, now))
            return True
        unchanged = row["size"] == size and row["mtime"] == mtime
        if unchanged and not force and row["state"] != "gone":
            if row["state"] == "pending" and priority < row["priority"]:
                self.db.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, row["id"]))
            return False
        if row["state"] == "running":
            return False  # the worker has it; a change is picked up by the next scan
        self.db.execute(
            "UPDATE jobs SET watch = ?, size = ?, mtime = ?, state = 'pending', priority = ?, force = ?,"
            " attempts = 0, next_attempt = 0, last_error = NULL, updated = ? WHERE id = ?",
            (watch, size, mtime, priority, int(force or row["force"]), now, row["id"]))
        return True

    @_locked
    def requeue(self, where: str, params: tuple = (), force: bool = False) -> int:
        """Put matching rows back to pending (retry, backfill); returns how many."""
        cur = self.db.execute(
            f"UPDATE jobs SET state = 'pending', attempts = 0, next_attempt = 0, priority = {BACKFILL},"
            f" force = MAX(force, ?), updated = ? WHERE state != 'running' AND ({where})",
            (int(force), time.time(), *params))
        return cur.rowcount

    @_locked
    def recover(self, max_attempts: int) -> int:
        """At start (we hold the lock): jobs a dead daemon left running go back to pending, and
        the interruption counts as an attempt, so a file that kills or wedges the daemon every
        time ends quarantined instead of in a restart loop. (The daemon then runs each such job
        alone, so the files that were merely in flight beside the culprit are not blamed again.)"""
        cur = self.db.execute(
            "UPDATE jobs SET attempts = attempts + 1, lease_until = NULL, updated = ?,"
            " last_error = ?, state = CASE WHEN attempts + 1 >= ? THEN 'quarantined' ELSE 'pending' END"
            " WHERE state = 'running'", (time.time(), INTERRUPTED, max_attempts))
        return cur.rowcount

    @_locked
    def lease(self, seconds: float) -> Job | None:
        """Take the next due job: live before backfill, oldest first; expired leases count as due."""
        now = time.time()
        with self._tx():
            row = self.db.execute(
                "SELECT * FROM jobs WHERE (state = 'pending' AND next_attempt <= ?)"
                " OR (state = 'running' AND lease_until < ?) ORDER BY priority, next_attempt, id LIMIT 1",
                (now, now)).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE jobs SET state = 'running', lease_until = ?, updated = ? WHERE id = ?",
                            (now + seconds, now, row["id"]))
        return Job.from_row(row)

    @_locked
    def release(self, job_id: int) -> None:
        """Give a leased job back untouched (shutdown mid-job)."""
        self.db.execute("UPDATE jobs SET state = 'pending', lease_until = NULL WHERE id = ? AND state = 'running'",
                        (job_id,))

    @_locked
    def done(self, job_id: int, sha256: str | None, fingerprint: str, seconds: float,
             size: int | None = None, mtime: float | None = None) -> None:
        now = time.time()
        self.db.execute(
            "UPDATE jobs SET state = 'done', sha256 = ?, fingerprint = ?, seconds = ?, finished = ?,"
            " lease_until = NULL, last_error = NULL, force = 0, updated = ?,"
            " size = COALESCE(?, size), mtime = COALESCE(?, mtime) WHERE id = ?",
            (sha256, fingerprint, seconds, now, now, size, mtime, job_id))

    @_locked
    def failed(self, job_id: int, error: str, transient: bool, max_attempts: int, base: float,
               cap: float) -> str:
        """Record a failure: transient ones retry with exponential backoff and jitter until
        ``max_attempts`` (then quarantine); permanent ones fail at once. Returns the new state."""
        row = self.db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        attempts = (row["attempts"] if row else 0) + 1
        now = time.time()
        if not transient:
            state, next_attempt = "failed", 0.0
        elif attempts >= max_attempts:
            state, next_attempt = "quarantined", 0.0
        else:
            delay = min(cap, base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            state, next_attempt = "pending", now + delay
        self.db.execute(
            "UPDATE jobs SET state = ?, attempts = ?, next_attempt = ?, last_error = ?, lease_until = NULL,"
            " finished = ?, updated = ? WHERE id = ?",
            (state, attempts, next_attempt, error, now if state != "pending" else None, now, job_id))
        return state

    @_locked
    def mark_gone(self, job_id: int) -> None:
        self.db.execute("UPDATE jobs SET state = 'gone', lease_until = NULL, updated = ? WHERE id = ?",
                        (time.time(), job_id))

    @_locked
    def forget(self, path: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE path = ?", (path,))

    # --- reading -------------------------------------------------------------------------------

    @_locked
    def get(self, path: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE path = ?", (path,)).fetchone()
        return Job.from_row(row) if row else None

    @_locked
    def by_sha(self, sha256: str) -> list[Job]:
        return [Job.from_row(r) for r in self.db.execute(
            "SELECT * FROM jobs WHERE sha256 = ? AND state IN ('done', 'gone')", (sha256,))]

    @_locked
    def jobs(self, where: str = "1", params: tuple = ()) -> list[Job]:
        return [Job.from_row(r) for r in self.db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)]

    @_locked
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for row in self.db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[row["state"]] = row["n"]
        return out

    @_locked
    def done_since(self, since: float) -> tuple[int, float]:
        row = self.db.execute("SELECT COUNT(*) AS n, COALESCE(SUM(seconds), 0) AS s FROM jobs"
                              " WHERE state = 'done' AND finished >= ?", (since,)).fetchone()
        return row["n"], row["s"]

    @_locked
    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                        (key, value, value))

    @_locked
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    # --- a long document's finished pages, kept until the whole document is done ------------------

    @_locked
    def pages_get(self, path: str, sha256: str, key: str) -> dict[int, dict[str, Any]]:
        rows = self.db.execute("SELECT page, data FROM pages WHERE path = ? AND sha256 = ? AND key = ?",
                               (path, sha256, key))
        return {row["page"]: json.loads(row["data"]) for row in rows}

    @_locked
    def pages_put(self, path: str, sha256: str, key: str, index: int, record: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO pages (path, sha256, key, page, data) VALUES (?, ?, ?, ?, ?)",
                        (path, sha256, key, index, json.dumps(record, ensure_ascii=False)))

    @_locked
    def pages_clear(self, path: str) -> None:
        self.db.execute("DELETE FROM pages WHERE path = ?", (path,))

    def _tx(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: the lease's select-then-update happens atomically."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
