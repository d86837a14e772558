"""The full-text index of results: each file's searchable passages (``search.Passage``) and
the ranked search over them (SQLite FTS5, bm25). It lives in the journal's database and shares
its connection, lock and transactions (``store.Store``): ``Journal.done`` records a job and
replaces its passages in one transaction. Reached as ``journal.index``."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from .search import Hit, Passage, SearchError, fts_query, snippet, terms
from .store import JournalError, Store, from_db, locked, to_db, under

# Ranking (bm25) orders every match: ~2.6 us a row, 2.6 s for a word each of a million captions
# holds, where the newest 20 matches take a millisecond. Past this many seconds a search shows the
# newest matches instead, and says so (``Hit.ranked``).
RANK_SECONDS = 0.25


class _Interrupted(SearchError):
    """A query stopped at its time budget."""


_STAGED = "CREATE TEMP TABLE IF NOT EXISTS staged (path, watch, kind, task, page, timestamp, text)"  # a reindex


class SearchIndex:
    """Passages per file, replaced whole; searched by the CLI, the web page and ``status``."""

    def __init__(self, store: Store):
        self.store = store
        self._x, self._tx = store.x, store.tx

    def replace(self, path: str | bytes, watch: str | bytes, kind: str | None, passages: list[Passage]) -> None:
        """A file's passages replaced, inside the caller's transaction (``Journal.done``: the job
        and its passages in one); ``path`` and ``watch`` as stored."""
        self._x("DELETE FROM passages WHERE path = ?", (path,))
        now = time.time()
        self._x("UPDATE jobs SET indexed = ? WHERE path = ?", (now, path))
        for p in passages:
            self._x("INSERT INTO passages (path, watch, task, kind, page, timestamp, created, text)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (path, watch, p.task, kind, p.page, p.timestamp, now, p.text))

    def moved(self, old: str | bytes, new: str | bytes) -> None:
        """A renamed file's passages follow it, inside the caller's transaction (``adopt``)."""
        self._x("UPDATE passages SET path = ? WHERE path = ?", (new, old))

    @locked
    def put(self, path: str, watch: str, kind: str | None, passages: list[Passage]) -> None:
        """A file's passages replaced, from its sidecar (``search --reindex``)."""
        with self._tx():
            self.replace(to_db(path), to_db(watch), kind, passages)

    @locked
    def stage(self, path: str, watch: str, kind: str | None, passages: list[Passage]) -> None:
        """``search --reindex``: a file's passages, kept aside (a temp table of this connection)
        until ``swap``; a kill before it leaves the live index as it was."""
        self._x(_STAGED)
        for p in passages:
            self._x("INSERT INTO temp.staged VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (to_db(path), to_db(watch), kind, p.task, p.page, p.timestamp, p.text))
        self._x("INSERT INTO temp.staged (path) VALUES (?)", (to_db(path),))  # a file with no text is indexed too

    @locked
    def swap(self, under_path: str | None = None) -> None:
        """The staged passages replace the index at or under ``under_path``, in one transaction."""
        self._x(_STAGED)
        where, params = under(under_path)
        now = time.time()
        with self._tx():
            self._x(f"DELETE FROM passages WHERE {where}", params)
            self._x("INSERT INTO passages (path, watch, task, kind, page, timestamp, created, text) SELECT path,"
                    " watch, task, kind, page, timestamp, ?, text FROM temp.staged WHERE text IS NOT NULL", (now,))
            self._x("UPDATE jobs SET indexed = ? WHERE path IN (SELECT path FROM temp.staged)", (now,))
        self._x("DROP TABLE temp.staged")

    @locked
    def search(self, query: str, task: str | None = None, under_path: str | None = None, kind: str | None = None,
               limit: int = 20, budget: float | None = None) -> list[Hit]:
        """The best ``limit`` passages matching ``query`` (bm25), of files not gone, each with a
        snippet around its match; stopped with a SearchError past ``budget`` seconds (the web
        page's: one heavy query must not hold a connection others need)."""
        where, params = under(under_path)
        where = where.replace("path", "p.path")
        match = fts_query(query)
        sql = ("SELECT p.path, p.task, p.kind, p.page, p.timestamp, p.text, bm25(passages_fts) AS score"
               " FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid LEFT JOIN jobs j ON j.path = p.path"
               f" WHERE passages_fts MATCH ? AND (j.state IS NULL OR j.state != 'gone') AND {where}"
               + (" AND p.task = ?" if task else "") + (" AND p.kind = ?" if kind else ""))
        args = (match, *params, *([task] if task else []), *([kind] if kind else []), limit)
        start, ranked = time.monotonic(), True
        try:
            rows = self._fts(sql + " ORDER BY score LIMIT ?", args, query,
                             RANK_SECONDS if budget is None else min(budget, RANK_SECONDS))
        except _Interrupted:
            if budget is not None and budget <= RANK_SECONDS:
                raise  # the caller's own budget is spent
            left = None if budget is None else budget - (time.monotonic() - start)
            rows, ranked = self._fts(sql + " ORDER BY passages_fts.rowid DESC LIMIT ?", args, query, left), False
        looked_for = terms(match)
        return [Hit(from_db(r["path"]), r["task"], r["kind"], r["page"], r["timestamp"],
                    snippet(r["text"], looked_for), r["score"], ranked) for r in rows]

    def _fts(self, sql: str, args: tuple[Any, ...], query: str, budget: float | None = None) -> list[sqlite3.Row]:
        """A full-text query's rows; what the index cannot parse is the query's fault (SearchError)."""
        if self.store.db is None:
            raise JournalError(f"the journal {self.store.path} is closed")
        if budget is not None:
            deadline = time.monotonic() + budget
            self.store.db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            return self.store.db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted" and budget is not None:
                raise _Interrupted(f"the search took longer than {budget:g} s and was stopped: use fewer or "
                                   "longer words") from None
            if "no such table" in str(exc):
                raise JournalError(f"the journal {self.store.path} has no search index yet (an older "
                                   "smolvlm-watch wrote it): run `smolvlm-watch search --reindex`, or start the "
                                   "daemon once") from None
            if any(w in str(exc) for w in ("fts5", "no such column", "unterminated string", "syntax error")):
                raise SearchError(f"the index cannot parse {query!r}: {exc} (put words with punctuation in "
                                  "double quotes, or drop the operators)") from None
            raise JournalError(self.store.explain(exc)) from None
        finally:
            if budget is not None:
                self.store.db.set_progress_handler(None, 0)

    @locked
    def stats(self) -> tuple[int, int | None]:
        """Passages in the index, and its size on disk in bytes (None where SQLite was built
        without the dbstat table)."""
        if self._x("SELECT 1 FROM sqlite_master WHERE name = 'passages'").fetchone() is None:
            return 0, 0  # a journal from before the index, opened read-only
        rows = self._x("SELECT COUNT(*) FROM passages").fetchone()[0]
        try:
            size = self._x("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE 'passages%'").fetchone()[0]
        except sqlite3.OperationalError:
            size = None
        return rows, size
