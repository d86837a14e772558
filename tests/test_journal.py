"""The journal: upgrades in place, one exact "under PATH" rule, any file name."""

from __future__ import annotations

import os
import sqlite3
import json
import time

import pytest

from smolvlm_watch.journal import SCHEMA_VERSION, Journal, JournalError, RetryPolicy

# The schema smolvlm-watch 0.1.0 (commit 2ac0937) created, with no user_version set.
SCHEMA_0 = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, watch TEXT NOT NULL, size INTEGER,
  mtime REAL, sha256 TEXT, fingerprint TEXT, state TEXT NOT NULL DEFAULT 'pending',
  priority INTEGER NOT NULL DEFAULT 0, force INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt REAL NOT NULL DEFAULT 0, lease_until REAL, last_error TEXT, created REAL NOT NULL,
  updated REAL NOT NULL, finished REAL, seconds REAL);
CREATE INDEX jobs_queue ON jobs (state, priority, next_attempt, id);
CREATE INDEX jobs_sha ON jobs (sha256);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pages (path TEXT NOT NULL, sha256 TEXT NOT NULL, key TEXT NOT NULL, page INTEGER NOT NULL,
  data TEXT NOT NULL, PRIMARY KEY (path, page));
"""


def test_a_journal_written_by_the_previous_release_is_upgraded_in_place(tmp_path):
    db = tmp_path / "journal.sqlite"
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_0)
    now = time.time()
    old.execute("INSERT INTO jobs (path, watch, size, mtime, sha256, fingerprint, state, created, updated, finished,"
                " seconds) VALUES ('/p/a.jpg', '/p', 10, 1.5, 'abc', 'fp1', 'done', ?, ?, ?, 2.5)", (now, now, now))
    old.execute("INSERT INTO jobs (path, watch, state, attempts, last_error, created, updated)"
                " VALUES ('/p/b.jpg', '/p', 'failed', 1, 'broken', ?, ?)", (now, now))
    old.execute("INSERT INTO pages VALUES ('/p/c.pdf', 'sha', 'key', 0, '{\"page\": 1}')")
    old.commit()
    old.close()
    with pytest.raises(JournalError, match="is from an older smolvlm-watch: start the daemon once"):
        Journal(db, readonly=True)  # looking never changes it
    j = Journal(db, exclusive=True)
    a, b = j.get("/p/a.jpg"), j.get("/p/b.jpg")
    assert (a.state, a.sha256, a.fingerprint, a.size, a.mtime, a.outputs) == ("done", "abc", "fp1", 10, 1.5, None)
    assert (b.state, b.attempts, b.last_error) == ("failed", 1, "broken")
    assert j.pages_get("/p/c.pdf", "sha", "key") == {0: {"page": 1}}
    assert j.done_since(now - 10) == (1, 2.5)
    j.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    Journal(db, readonly=True).close()


def test_a_journal_from_before_the_search_index_gets_one_and_keeps_its_rows(tmp_path):
    """Schema 1 (the release before search) upgraded in place: rows kept, the index there and
    empty until `search --reindex` or the daemon fills it."""
    from smolvlm_watch.search import Passage

    db = tmp_path / "journal.sqlite"
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_0)
    old.execute("ALTER TABLE jobs ADD COLUMN outputs TEXT")
    old.execute("ALTER TABLE jobs ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0")
    old.execute("PRAGMA user_version = 1")
    now = time.time()
    old.execute("INSERT INTO jobs (path, watch, state, created, updated, outputs) VALUES ('/p/a.jpg', '/p', 'done',"
                " ?, ?, '{}')", (now, now))
    old.commit()
    old.close()
    j = Journal(db)
    assert j.get("/p/a.jpg").state == "done" and j.index.stats()[0] == 0
    assert j.index.search("beach") == []
    j.index.put("/p/a.jpg", "/p", "image", [Passage("caption", "a sandy beach")])
    assert [h.path for h in j.index.search("beach")] == ["/p/a.jpg"]
    assert j.get("/p/a.jpg").indexed is not None  # schema 3: when its passages were taken
    j.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


@pytest.mark.parametrize("under, matched", [
    ("/photos/my_album", {"/photos/my_album/a.jpg", "/photos/my_album/sub/b.jpg"}),  # not myXalbum
    ("/photos/100%", {"/photos/100%/c.jpg"}),  # % is a character, not a wildcard
    ("/photos/a", {"/photos/a/d.jpg"}),  # not /photos/ab
    ("/photos/A", set()),  # case-sensitive
    ("/photos/my_album/a.jpg", {"/photos/my_album/a.jpg"}),  # a file itself
    ("/photos/", {"/photos/my_album/a.jpg", "/photos/my_album/sub/b.jpg", "/photos/myXalbum/x.jpg",
                  "/photos/100%/c.jpg", "/photos/100x/y.jpg", "/photos/a/d.jpg", "/photos/ab/e.jpg",
                  os.fsdecode(b"/photos/caf\xe9/f.jpg")}),
    (os.fsdecode(b"/photos/caf\xe9"), {os.fsdecode(b"/photos/caf\xe9/f.jpg")}),  # a non-UTF-8 folder
])
def test_under_is_exact_on_whole_path_components(tmp_path, under, matched):
    j = Journal(tmp_path / "j.sqlite")
    paths = ["/photos/my_album/a.jpg", "/photos/my_album/sub/b.jpg", "/photos/myXalbum/x.jpg", "/photos/100%/c.jpg",
             "/photos/100x/y.jpg", "/photos/a/d.jpg", "/photos/ab/e.jpg", os.fsdecode(b"/photos/caf\xe9/f.jpg")]
    for p in paths:
        j.enqueue(p, "/photos", 1, 1.0)
        job = j.lease(60)
        j.failed(job.id, "broken", False, RetryPolicy())
    assert j.requeue_failed(under) == len(matched)
    assert {job.path for job in j.all() if job.state == "pending"} == matched
    j.close()


def test_paths_that_are_not_utf8_round_trip(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    name = os.fsdecode(b"/photos/\xff\xfe r\xe9sum\xe9.jpg")
    assert j.enqueue(name, "/photos", 5, 2.0)
    assert j.get(name).path == name and j.all()[0].path == name
    assert not j.enqueue(name, "/photos", 5, 2.0)  # found again: unchanged
    j.close()


def test_the_daemon_record_reads_what_an_older_daemon_wrote():
    """Issue 32, 3: one typed record for what the daemon says of itself (status, backfill and the
    web page read it alike); a key an older daemon did not write takes its default."""
    from smolvlm_watch.daemon_record import DaemonRecord, WatchRecord

    old = json.dumps({"pid": 7, "model": "m", "model_loaded": True, "device": "cpu", "future_key": 1,
                      "watches": [{"path": "/w", "mode": "native", "reason": "ext4 file system", "available": True}]})
    record = DaemonRecord.from_json(old)
    assert record.pid == 7 and record.model_loaded and record.restart_needed is None
    assert record.watches == (WatchRecord("/w", "native", "ext4 file system", True, 0),)
    assert DaemonRecord.from_json(record.to_json()) == record
    assert DaemonRecord.from_json(None) == DaemonRecord()


def test_a_folder_and_a_prefix_read_a_range_of_the_path_index_not_every_row(tmp_path):
    """Issue 28, 1: a deleted file (``mark_gone_under``), a pair's stem and ``--under`` asked
    ``substr(path, ...)`` of every row: 0.3 s per deleted file at a million rows, under the lock
    the worker writes through. Each is a range of the path index now, for TEXT and BLOB paths."""
    from smolvlm_watch.store import starting, under

    j = Journal(tmp_path / "j.sqlite")
    for where, params in (under("/photos/a"), under(os.fsdecode(b"/photos/caf\xe9")), starting("/photos/IMG_1.")):
        for table, index in (("jobs", "sqlite_autoindex_jobs_1"), ("passages", "passages_path")):
            plan = [row[3] for row in j.db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE {where}", params)]
            assert not any(step.startswith("SCAN") for step in plan) and any(index in step for step in plan), plan
    j.close()
