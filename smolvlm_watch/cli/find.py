"""``search``: find a caption, a tag, an OCR page or an answer again; ``--reindex`` rebuilds the
index from the sidecars on disk (they are the source of truth)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import jsontext
from ..config import Config, WatchConfig
from ..journal import Journal, JournalError
from ..jsontext import printable
from ..plugins import Registry
from ..progress import Progress
from ..search import Hit, SearchError, from_sidecar, highlighted, plain
from .. import search_index
from ..watcher import MediaFilter, scan
from .common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, config_arg, load_checked

KINDS = ("image", "video", "document")


def cmd_search(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    if args.reindex is not None:
        return _reindex(config, registry, args.reindex or None)
    if not args.query:
        print("error: give a QUERY, or --reindex [PATH]", file=sys.stderr)
        return EXIT_CONFIG
    try:
        journal = Journal(config.state.db, readonly=True)
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        hits = journal.index.search(args.query, args.task, _absolute(args.under), args.kind, args.limit)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        journal.close()
    _print(hits, args.json)
    return EXIT_OK if hits else EXIT_FAILED


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().absolute()) if path else None


def _where(hit: Hit) -> str:
    if hit.page is not None:
        return f"page {hit.page}"
    if hit.timestamp is not None:
        minutes, seconds = divmod(hit.timestamp, 60)
        return f"at {int(minutes)}:{seconds:04.1f}"
    return ""


def _print(hits: list[Hit], as_json: bool) -> None:
    if hits and not hits[0].ranked:
        print(f"note: more matches than could be ranked by relevance in {search_index.RANK_SECONDS:g} s: the newest "
              f"{len(hits)} are shown (add words to narrow the search)", file=sys.stderr)
    tty = sys.stdout.isatty()
    for hit in hits:
        if as_json:
            print(jsontext.dumps(hit.as_json()))
            continue
        snippet = " ".join(hit.snippet.split())  # one line per hit
        snippet = highlighted(snippet) if tty else plain(snippet)
        where = _where(hit)
        print(printable(f"{hit.path}  {hit.task}{'  ' + where if where else ''}  {snippet}"))


def _reindex(config: Config, registry: Registry, under: str | None) -> int:
    """Every media file of the watches (at or under ``under``) with a current JSON sidecar gets
    its passages from it; the rest of the index under there is dropped. Built aside and swapped
    in with one transaction."""
    root = _absolute(under)
    files = list(_media(config, root))
    known = registry.task_objects
    journal = Journal(config.state.db)
    counts = {"indexed": 0, "no sidecar": 0, "stale sidecar": 0}
    progress = Progress(len(files))
    try:
        for path, watch in files:
            progress.start(path.name)
            outcome, kind, found = from_sidecar(path, watch, known)
            if outcome == "indexed":
                journal.index.stage(str(path), str(watch.path), kind, found)
            counts[outcome] += 1
            progress.advance("done" if outcome == "indexed" else "skipped")
        journal.index.swap(root)  # one transaction: a kill before it leaves the index as it was
        rows, size = journal.index.stats()
    finally:
        progress.close()
        journal.close()
    size_text = f", {size / 2**20:.1f} MiB" if size is not None else ""
    print(f"reindexed {counts['indexed']} file(s) ({rows} passages in the index{size_text}); "
          f"{counts['no sidecar']} without a JSON sidecar, {counts['stale sidecar']} whose sidecar describes "
          "an older version of the file (the daemon redoes those)")
    return EXIT_OK


def _media(config: Config, root: str | None) -> Iterator[tuple[Path, WatchConfig]]:
    """Each input file of the watches at or under ``root``, with the watch it belongs to (the
    deepest: a file of a nested watch is that watch's)."""
    top = Path(root) if root else None
    for watch in config.watches:
        if top is None or top == watch.path or watch.path in top.parents:
            if top is not None and top.is_file():
                found: Iterator[Path] = iter([top])
            else:
                start = watch if top is None else replace(watch, path=top)
                found = scan(start, MediaFilter(start))
        elif top in watch.path.parents:
            found = scan(watch, MediaFilter(watch))
        else:
            continue
        for path in found:
            if config.watch_for(path) == watch:
                yield path, watch


def add_commands(sub: Any) -> None:
    s = sub.add_parser("search", help="find captions, tags, OCR text and answers in the index")
    s.add_argument("query", nargs="?", help="words (all must match, as substrings), or FTS5 syntax")
    config_arg(s)
    s.add_argument("--task", help="only this task's results")
    s.add_argument("--under", metavar="PATH", help="only files at or under PATH")
    s.add_argument("--kind", choices=KINDS, help="only images, videos or documents")
    s.add_argument("--limit", type=int, default=20, help="at most N hits (default 20)")
    s.add_argument("--json", action="store_true", help="one JSON object per hit")
    s.add_argument("--reindex", nargs="?", const="", metavar="PATH",
                   help="rebuild the index from the sidecars on disk (all watches, or at/under PATH)")
    s.set_defaults(func=cmd_search)
