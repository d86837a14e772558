"""Finding results again: what of a sidecar is searchable, and how a query reaches the index.

The index lives in the journal (SQLite FTS5, ``trigram`` tokenizer) and is written in the same
transaction that records a job done, from the record the sidecars were just written from (or,
for a file already current, the record read back from its JSON sidecar): the index is never
ahead of the sidecars, and ``search --reindex`` rebuilds it from them.

Why trigram: every query is a substring match (``beach`` finds ``beaches``, ``ntrac`` finds
``contract``: Immich's users ask for exactly that, #23689), OCR typos still match their correct
neighbours' trigrams, and it needs no word list for Cyrillic, CJK or any other script. The cost:
terms shorter than three characters cannot be searched, and the index is about three times the
size of the text (measured in ``bench/search.py``).

A task says which passages its results make (``Task.passages``); by default strings and lists
of strings, one passage per page where the task ran per page, and one per video frame for
results shaped ``[{"timestamp", "text"}]``.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import WatchConfig
from .sidecar import PENDING, SidecarError, Target, read_json

MARK_START, MARK_END = "\ue000", "\ue001"  # around a match in a snippet (private use: never in a result)
MIN_TERM = 3  # the trigram tokenizer cannot match shorter terms


class SearchError(Exception):
    """A query the index cannot run, with what to do instead."""


@dataclass(frozen=True)
class Passage:
    """One searchable piece of a file's results: a caption, a page's OCR, a frame's text."""

    task: str
    text: str
    page: int | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class Hit:
    path: str
    task: str
    kind: str | None
    page: int | None
    timestamp: float | None
    snippet: str  # the match between MARK_START and MARK_END
    score: float  # bm25: lower is better
    ranked: bool = True  # False: too many matches to rank in time, the newest were taken (``RANK_SECONDS``)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "task": self.task, "page": self.page, "timestamp": self.timestamp,
                "snippet": plain(self.snippet), "score": round(self.score, 4)}


class PassageSource(Protocol):
    def passages(self, entry: dict[str, Any], pages: Sequence[dict[str, Any]]) -> list[Passage]: ...


def texts(value: Any) -> list[tuple[str, float | None]]:
    """The text in a result: a string; a list of strings (tags) as one passage; items with a
    ``text`` (and a ``timestamp``: a video frame) one passage each; a mapping's string values."""
    if isinstance(value, str):
        return [(value, None)] if value.strip() else []
    if isinstance(value, list):
        words = [v for v in value if isinstance(v, str) and v.strip()]
        out: list[tuple[str, float | None]] = [(", ".join(words), None)] if words else []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip():
                stamp = item.get("timestamp")
                out.append((item["text"], float(stamp) if isinstance(stamp, (int, float)) else None))
        return out
    if isinstance(value, dict):
        return [t for v in value.values() if isinstance(v, str) for t in texts(v)]
    return []


def default_passages(task: str, entry: dict[str, Any], pages: Sequence[dict[str, Any]]) -> list[Passage]:
    """A task's passages unless it says otherwise: per page where its results are on the pages
    (a document's OCR), else from its ``result``."""
    if "result" not in entry:
        return []  # an error, or skipped
    on_pages = [p for p in pages if task in p]
    if on_pages:
        return [Passage(task, text, page=p.get("page"), timestamp=stamp)
                for p in on_pages for text, stamp in texts(p[task])]
    return [Passage(task, text, timestamp=stamp) for text, stamp in texts(entry["result"])]


def passages(tasks: Mapping[str, dict[str, Any]], pages: Sequence[dict[str, Any]],
             known: Mapping[str, PassageSource], context: Mapping[str, Any] | None = None) -> list[Passage]:
    """Every passage of a sidecar record's tasks (a task no plugin provides now, its plugin
    removed, gets the default), and one of its ``context``: where and when it was taken."""
    out: list[Passage] = context_passages(context)
    for name, entry in tasks.items():
        if not isinstance(entry, dict):
            continue
        source = known.get(name)
        out += source.passages(entry, pages) if source is not None else default_passages(name, entry, pages)
    return out


def context_passages(context: Mapping[str, Any] | None) -> list[Passage]:
    """A file's place and capture date as one passage (task ``context``), so ``search Lisbon``
    and ``search 2019-07`` find a photo whatever its caption says: the town, its region and
    country, the date as written (``2019-07-14``) and in words (``July 2019``), the camera."""
    if not context:
        return []
    words: list[str] = []
    place = context.get("place")
    if isinstance(place, dict):
        words += [str(place[k]) for k in ("city", "state", "country", "country_code") if place.get(k)]
    taken = context.get("taken_at")
    if isinstance(taken, str) and len(taken) >= 10:
        try:
            day = datetime.date.fromisoformat(taken[:10])
        except ValueError:
            day = None
        words += [taken[:10], day.strftime("%B %Y")] if day else []
    if isinstance(context.get("camera"), str):
        words.append(context["camera"])
    return [Passage("context", " · ".join(words))] if words else []


_SYNTAX = re.compile(r'["():*^]|\b(AND|OR|NOT|NEAR)\b')


MAX_TERMS, MAX_QUERY = 32, 500  # a query of 1,000 OR terms held the index for 52 s


def fts_query(query: str) -> str:
    """The query as FTS5 takes it. Plain words are quoted one by one (so ``AC/DC`` or
    ``e-mail`` need no escaping; all must match, each as a substring), a word shorter than three
    characters together with its neighbour (``scoreboard 2``: that sequence); a query using
    FTS5's own syntax (quotes, parentheses, AND/OR/NOT, NEAR, column filters) is passed through
    as written."""
    query = query.strip()
    terms = [t for t in re.split(r"\s+", query) if t]
    if len(query) > MAX_QUERY or len(terms) > MAX_TERMS:
        raise SearchError(f"a search takes at most {MAX_TERMS} words and {MAX_QUERY} characters")
    bare = [t.strip('"*()') for t in terms]
    if not terms or all(len(t) < MIN_TERM for t in bare):
        raise SearchError(f"search terms need at least {MIN_TERM} characters (the index matches substrings "
                          "of three characters and more)")
    if _SYNTAX.search(query):
        return query
    groups: list[str] = []
    for term in terms:  # a short term cannot match alone: it joins its neighbour ("page 2")
        if groups and (len(term) < MIN_TERM or len(groups[-1]) < MIN_TERM):
            groups[-1] += " " + term
        else:
            groups.append(term)
    return " ".join('"' + g.replace('"', '""') + '"' for g in groups)


_TERMS = re.compile(r'"((?:[^"]|"")*)"|([^\s"()]+)')
SNIPPET_CONTEXT = 48  # characters shown on each side of a match


def terms(query: str) -> list[str]:
    """The words and phrases a query looks for (FTS5's operators and column filters left out),
    lower-cased: what a snippet marks."""
    out = []
    for phrase, word in _TERMS.findall(query):
        text = phrase.replace('""', '"') if phrase else word.rstrip("*")
        if ":" in text and not phrase:
            text = text.split(":", 1)[1]
        if text and text not in ("AND", "OR", "NOT") and not text.startswith("NEAR"):
            out.append(text.lower())
    return out


def snippet(text: str, looked_for: list[str]) -> str:
    """The part of ``text`` around the first match of any term, the match between MARK_START and
    MARK_END: found in Python on the few hits shown, which costs far less than FTS5's snippet()
    over trigram position lists (measured: 125 ms for 20 OCR pages, under 1 ms here)."""
    lowered = text.lower()
    if len(lowered) != len(text):
        lowered = text  # a fold that changes lengths would misplace the marks: match as written
    found = [(lowered.find(t), t) for t in looked_for if t and lowered.find(t) >= 0]
    if not found:
        return text[:2 * SNIPPET_CONTEXT] + ("…" if len(text) > 2 * SNIPPET_CONTEXT else "")
    at, term = min(found)
    start, end = max(0, at - SNIPPET_CONTEXT), min(len(text), at + len(term) + SNIPPET_CONTEXT)
    return (("…" if start else "") + text[start:at] + MARK_START + text[at:at + len(term)] + MARK_END
            + text[at + len(term):end] + ("…" if end < len(text) else ""))


def plain(snippet: str) -> str:
    return snippet.replace(MARK_START, "").replace(MARK_END, "")


def highlighted(snippet: str) -> str:
    """The snippet for a terminal: the match in bold."""
    return snippet.replace(MARK_START, "\x1b[1m").replace(MARK_END, "\x1b[0m")


def from_sidecar(path: Path, watch: WatchConfig, known: Mapping[str, PassageSource]
                 ) -> tuple[str, str | None, list[Passage]]:
    """A file's passages as its JSON sidecar on disk holds them (the source of truth): the
    outcome ("indexed", "no sidecar", "stale sidecar": it describes an older version of the
    file), the file's kind, and the passages."""
    try:
        doc = read_json(Target.for_media(path, watch.output, watch.path).json_path) if "json" in watch.outputs else None
        st = os.stat(path)
    except (OSError, SidecarError):
        return "no sidecar", None, []
    if doc is None or PENDING in doc:
        return "no sidecar", None, []
    source = doc.get("source") or {}
    if source.get("size") != st.st_size or abs(float(source.get("mtime") or 0) - st.st_mtime) > 1e-3:
        return "stale sidecar", None, []
    return "indexed", source.get("kind"), passages(doc.get("tasks") or {}, doc.get("pages") or [], known,
                                                   doc.get("context"))
