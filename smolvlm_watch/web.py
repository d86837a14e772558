"""A local web page over the journal and the sidecars: the daemon's status, search with
thumbnails, one file's results (``smolvlm-watch serve``, or ``web.listen`` in the daemon).

Server-rendered HTML that works without JavaScript; a few lines of JS refresh the status panel.
Safe by construction: every value is HTML-escaped where it is written into the page; a path is
served only when it resolves (symlinks followed) to a regular file inside a configured watch,
anything else is 404; previews are re-encoded JPEGs made here (never the original bytes under
the original content type) and cached in the state folder within ``web.thumb_cache_mb``; the
only write is retry, a POST carrying a per-server CSRF token; CSP forbids inline script. A
non-loopback listener needs ``web.allow_remote`` and a token (``web.token_env``), compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import ipaddress
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .config import Config, ConfigError
from . import places, report
from .httpd import Request, Response, not_found
from .journal import Journal, JournalError
from .media import MediaError, open_media
from .search import SearchError, highlighted, plain
from .sidecar import Target, read_json
from .watcher import MediaFilter

THUMB_EDGE, PREVIEW_EDGE = 320, 1280
SIDECAR_BYTES = 4_000_000  # what /sidecar shows of one file, read no further
PAGES_SHOWN = 50  # a document's pages on its file page
SEARCH_BUDGET = 2.0  # seconds one search of the page may take before it is stopped
STATS_SECONDS = 30.0
CSS = """body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#234;color:#fff;padding:.6em 1em}header a{color:#fff;margin-right:1em}
main{padding:1em;overflow-wrap:anywhere;max-width:1280px}
table{border-collapse:collapse;max-width:100%}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:1em}
.card{background:#fff;border:1px solid #ddd;padding:.5em}.ctx{color:#555;font-size:.9em;margin:.2em 0}
.card img{width:100%;height:180px;object-fit:contain;background:#eee}
.preview{max-width:100%;max-height:70vh;height:auto}@media (max-width:600px){td,th{padding:.2em .3em}}
.err{color:#a00}.ok{color:#070}mark{background:#fe6}
pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.5em}
.spark rect{fill:#48c}
"""
JS = """setInterval(function(){fetch('panel').then(function(r){return r.ok?r.text():null}).then(function(t){
if(t!==null){document.getElementById('panel').innerHTML=t}}).catch(function(){})},3000);"""
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                    "script-src 'self'; form-action 'self'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def e(value: Any) -> str:
    """Every value written into the page goes through here. A file name that is not UTF-8 (a
    Latin-1 name from an SMB share) is shown with its undecodable bytes as U+FFFD."""
    return html.escape(_shown("" if value is None else str(value)), quote=True)


def _shown(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def page(title: str, body: str, script: bool = False) -> Response:
    nav = '<a href="/">Status</a><a href="/search">Search</a>'
    js = '<script src="/app.js"></script>' if script else ""
    doc = (f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)} · smolvlm-watch</title>'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<link rel="stylesheet" href="/app.css"></head><body><header>{nav}</header><main>{body}</main>{js}'
           "</body></html>")
    return Response(200, doc.encode(), "text/html; charset=utf-8")


class Web:
    """The pages, over a journal the caller owns (the daemon's, or `serve`'s own)."""

    def __init__(self, config: Config, journal: Journal, token: str | None = None, reader: Journal | None = None):
        self.config, self.journal, self.token = config, journal, token
        self.reader = reader or journal  # what the pages read through (the daemon's: a connection of their own)
        self.thumbs = config.state.db.parent / "thumbnails"
        self.cache_bytes = int(config.web.thumb_cache_mb * 2**20)
        self._cache_total: int | None = None  # bytes in the preview cache, counted once, then kept
        self._cache_lock = threading.Lock()
        self._stats: tuple[float, tuple[int, int | None]] | None = None
        self.csrf = secrets.token_urlsafe(24)  # per server start: a form from an old page is refused
        self.watch_roots = [w.path.resolve() for w in config.watches]
        self.filters = {w.path: MediaFilter(w) for w in config.watches}
        self.tasks = sorted({t for w in config.watches for t in w.tasks})  # the search form's task filter
        listen = config.web.listen.host.lower() if config.web.listen else "localhost"
        self.names = {"localhost", listen, *config.web.hosts}

    # --- routing ---------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Every response with the security headers; the Host (and a POST's origin) checked
        first, then a token where one is set."""
        response = self._foreign(request) or self._authorized(request) or self._route(request)
        return Response(response.status, response.body, response.ctype, {**SECURITY_HEADERS, **response.headers})

    def _foreign(self, request: Request) -> Response | None:
        """DNS rebinding: a page on another site that points its own name at this address reads
        and acts as if it were ours. A request is served only under a Host that is an address
        (no name can be rebound to it), ``localhost``, the listen host or one of ``web.hosts``;
        a POST whose Origin (or Referer) names another site is refused as well."""
        host = _hostname(request.headers.get("host", ""))
        if not self._ours(host):
            return Response(403, f"forbidden: {_shown(host) or 'no'} Host is not one of this server's names; add it "
                                 "to web.hosts to reach the page by it\n".encode())
        if request.method == "POST":
            origin = request.headers.get("origin") or request.headers.get("referer")
            if origin and origin != "null" and _hostname(urllib.parse.urlsplit(origin).netloc) != host:
                return Response(403, b"forbidden: the form was sent from another site\n")
            if origin == "null":
                return Response(403, b"forbidden: the form was sent from an opaque origin\n")
        return None

    def _ours(self, host: str) -> bool:
        if not host:
            return False
        try:
            ipaddress.ip_address(host)
            return True  # an address literal: no other site's name can stand for it
        except ValueError:
            return host in self.names

    def _authorized(self, request: Request) -> Response | None:
        """None when the request may proceed. The token comes once as ``?token=`` (then a
        cookie holds it) or as ``Authorization: Bearer``; compared in constant time."""
        if self.token is None:
            return None
        cookies = dict(c.strip().split("=", 1) for c in request.headers.get("cookie", "").split(";") if "=" in c)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = _query(urllib.parse.urlsplit(request.target).query).get("token", "")
        for candidate in (cookies.get("smolvlm_token", ""), bearer, given):
            if candidate and hmac.compare_digest(candidate.encode(), self.token.encode()):
                if candidate is given:
                    return Response(303, b"", headers={"Location": request.path, "Set-Cookie":
                                    f"smolvlm_token={given}; HttpOnly; SameSite=Strict; Path=/"})
                return None
        return Response(401, b"a token is required: open the page once with ?token=... (web.token_env)\n")

    def _route(self, request: Request) -> Response:
        url = urllib.parse.urlsplit(request.target)
        method, form = request.method, request.form
        query = _query(url.query)
        routes: dict[str, Callable[[dict[str, str]], Response]] = {
            "/": self.status, "/panel": self.panel, "/search": self.search, "/file": self.file,
            "/thumb": self.thumb, "/sidecar": self.sidecar, "/app.css": lambda q: Response(200, CSS.encode(),
                                                                                            "text/css"),
            "/app.js": lambda q: Response(200, JS.encode(), "text/javascript")}
        if method == "POST":
            posts = {"/retry": self.retry, "/rescan": self.rescan}
            return posts[url.path](form) if url.path in posts else Response(405, b"read-only\n", "text/plain")
        route = routes.get(url.path)
        return route(query) if route else not_found()

    # --- paths -----------------------------------------------------------------------------------

    def inside(self, raw: str | None) -> Path | None:
        """The file ``raw`` names, as given (normalised), when it is input its watch accepts (no
        hidden file, no excluded folder, a media extension) and resolves to a regular file
        inside that watch; else None. A user's passwords.txt beside a photo is not ours to show."""
        if not raw or "\0" in raw or not os.path.isabs(raw):
            return None
        given = Path(os.path.normpath(raw))
        watch = self.config.watch_for(given)
        if watch is None or self.filters[watch.path].reason(given) is not None:
            return None
        try:
            path = given.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not path.is_file() or not any(path.is_relative_to(root) for root in self.watch_roots):
            return None
        return given

    # --- status ----------------------------------------------------------------------------------

    def status(self, query: dict[str, str]) -> Response:
        return page("Status", f'<div id="panel">{self._panel()}</div>', script=True)

    def panel(self, query: dict[str, str]) -> Response:
        return Response(200, self._panel().encode())

    def _panel(self) -> str:
        j = self.reader
        r = report.read(self.config, j, self._index_stats())
        rows, size = r.index
        hours = j.done_per_hour(time.time(), 24)
        top = max(hours) or 1
        bars = [(i * 10, max(1, 40 * n // top), n) for i, n in enumerate(hours)]  # SVG: no inline style (CSP)
        spark = "".join(f'<rect x="{x}" y="{40 - h}" width="8" height="{h}"><title>{n}</title></rect>'
                        for x, h, n in bars)
        watches = "".join(f"<tr><td>{e(w.path)}</td><td>{e(w.mode)}</td><td>{e(w.reason)}</td></tr>"
                          for w in r.daemon.watches)
        current = "".join(f'<li><a href="/file?path={q(f.path)}">{e(f.path)}</a></li>' for f in j.running())
        recent = "".join(f'<tr><td><a href="/file?path={q(f.path)}">{e(Path(f.path).name)}</a></td>'
                         f'<td class="{"ok" if f.state == "done" else ""}">{e(f.state)}</td></tr>'
                         for f in j.recent(10))
        fails = "".join(
            f'<tr><td><a href="/file?path={q(f.path)}">{e(f.path)}</a></td><td>{e(f.state)}</td>'
            f'<td class="err">{e(f.last_error)}</td><td><form method="post" action="/retry">'
            f'<input type="hidden" name="csrf" value="{e(self.csrf)}"><input type="hidden" name="path" '
            f'value="{e(f.path)}"><button>Retry</button></form></td></tr>' for f in r.failures[:50])
        index = f"search index {rows} passages" + (f", {size / 2**20:.1f} MiB" if size else "")
        queue = ", ".join(f"{e(k)} {v}" for k, v in r.queue.items())
        return (f"<h1>smolvlm-watch</h1><p>{self._daemon_line(r)} · {index}</p>"
                f"<p>queue: {queue} · done in the last hour {r.done_last_hour}</p>"
                f'<svg class="spark" width="240" height="40" role="img" aria-label="files done per hour, last 24 h">'
                f"{spark}</svg>"
                f"<h2>Watches</h2><table><tr><th>folder</th><th>mode</th><th></th></tr>{watches}</table>"
                f'<form method="post" action="/rescan"><input type="hidden" name="csrf" value="{e(self.csrf)}">'
                "<button>Rescan now</button></form>"
                f"<h2>Now</h2><ul>{current or '<li>idle</li>'}</ul>"
                f"<h2>Recent</h2><table>{recent}</table>"
                f"<h2>Failures</h2><table>{fails or '<tr><td>none</td></tr>'}</table>")

    def _index_stats(self) -> tuple[int, int | None]:
        """The index's rows and size, at most STATS_SECONDS old: its size is summed over the
        database's pages (~0.5 s for a 568 MB journal, seconds when cold), and the panel
        refreshes every 3 s."""
        now = time.monotonic()
        if self._stats is None or now - self._stats[0] > STATS_SECONDS:
            self._stats = (now, self.reader.index.stats())
        return self._stats[1]

    def _daemon_line(self, r: report.StatusReport) -> str:
        loaded = "loaded" if r.daemon.model_loaded and r.running else "not loaded"
        pid = f", pid {e(r.daemon.pid)}" if r.running else ""
        return (f"daemon: <b>{'up' if r.running else 'down'}</b>{pid} · model {e(r.model)} ({loaded}, device "
                f"{e(r.daemon.device)})")

    def retry(self, form: dict[str, str]) -> Response:
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf):
            return _STALE
        path = form.get("path") or ""
        self.journal.requeue_failed(path) if path else None
        return Response(303, b"", headers={"Location": "/"})

    def rescan(self, form: dict[str, str]) -> Response:
        """The Rescan button: what ``smolvlm-watch rescan`` asks, for every watch."""
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf):
            return _STALE
        self.journal.ask_rescan(None)
        return Response(303, b"", headers={"Location": "/"})

    # --- search ----------------------------------------------------------------------------------

    def search(self, query: dict[str, str]) -> Response:
        text = query.get("q", "")
        form = (f'<form action="/search"><input name="q" value="{e(text)}" size="40" autofocus> '
                f'<select name="kind"><option value="">any kind</option>'
                + "".join(f'<option{" selected" if query.get("kind") == k else ""}>{k}</option>'
                          for k in ("image", "video", "document"))
                + '</select> <select name="task"><option value="">any task</option>'
                + "".join(f'<option{" selected" if query.get("task") == t else ""}>{e(t)}</option>' for t in self.tasks)
                + "</select> <button>Search</button></form>")
        if not text:
            return page("Search", form)
        try:
            hits = self.reader.index.search(text, query.get("task") or None, None, query.get("kind") or None, 60,
                                      budget=SEARCH_BUDGET)
        except SearchError as exc:
            return page("Search", form + f'<p class="err">{e(exc)}</p>')
        cards = "".join(self._card(h) for h in hits)
        order = "" if not hits or hits[0].ranked else (" (more matches than could be ranked in time: the newest "
                                                       "first; add words to narrow the search)")
        return page(f"Search: {text}", form + f"<p>{len(hits)} hit(s){order}</p><div class='grid'>{cards}</div>")

    def _card(self, hit: Any) -> str:
        """A hit: its preview (the page, the frame at its time), the match, and the file's other
        short results (a caption, tags: whatever its tasks wrote as text)."""
        doc = self._sidecar_doc(Path(hit.path)) or {}
        others = [(name, entry["result"]) for name, entry in (doc.get("tasks") or {}).items()
                  if isinstance(entry, dict) and name != hit.task and isinstance(entry.get("result"), (str, list))]
        thumb = f"/thumb?path={q(hit.path)}" + (f"&page={hit.page}" if hit.page else "") + (
            f"&t={hit.timestamp}" if hit.timestamp is not None else "")
        marked = e(highlighted(hit.snippet)).replace("\x1b[1m", "<mark>").replace("\x1b[0m", "</mark>")
        extra = "".join(f"<div><i>{e(name)}</i>: {e(_short(result))}</div>" for name, result in others[:3]
                        if _short(result))
        return (f'<div class="card"><a href="/file?path={q(hit.path)}"><img src="{e(thumb)}" '
                f'alt="{e(plain(hit.snippet))}" loading="lazy"></a><div><b>{e(Path(hit.path).name)}</b> '
                f"{e(hit.task)} {e(_where(hit))}</div>{_when_where(doc)}<div>{marked}</div>{extra}</div>")

    # --- one file --------------------------------------------------------------------------------

    def _sidecar_doc(self, path: Path) -> dict[str, Any] | None:
        watch = self.config.watch_for(path)
        if watch is None:
            return None
        return read_json(Target.for_media(path, watch.output, watch.path).json_path)

    def file(self, query: dict[str, str]) -> Response:
        path = self.inside(query.get("path"))
        if path is None:
            return not_found()
        doc = self._sidecar_doc(path) or {}
        job = self.reader.get(str(path))
        rows = "".join(
            f"<h3>{e(name)}</h3><table><tr><td>result</td><td><pre>{e(_outcome(entry))}"
            f"</pre></td></tr><tr><td>prompt</td><td>{e(entry.get('prompt'))}</td></tr><tr><td>fingerprint</td>"
            f"<td>{e(entry.get('fingerprint'))}</td></tr><tr><td>seconds</td><td>{e(entry.get('seconds'))}</td></tr>"
            f"<tr><td>plugin</td><td>{e(entry.get('plugin'))} {e(entry.get('plugin_version'))}</td></tr></table>"
            for name, entry in (doc.get("tasks") or {}).items() if isinstance(entry, dict))
        model = doc.get("model") or {}
        history = _history(job)
        watch = self.config.watch_for(path)
        assert watch is not None
        names = [Target.for_media(path, watch.output, watch.path).json_path.name, *(doc.get("outputs") or {})]
        links = "".join(f'<li><a href="/sidecar?path={q(str(path))}&name={q(n)}">{e(n)}</a></li>'
                        for n in names if doc)
        preview = (f'<img class="preview" src="/thumb?path={q(str(path))}&size={PREVIEW_EDGE}" alt="{e(path.name)}">'
                   if job is None or job.state != "failed" and job.state != "quarantined" else "")
        used = ", ".join(e(v) for v in (model.get("backend"), model.get("device")) if v)
        about = f"<p>model {e(model.get('id'))}" + (f" ({used})" if used else "") + "</p>" if model.get("id") else ""
        body = (f"<h1>{e(path.name)}</h1><p>{e(path)}</p>{_when_where(doc)}{preview}{history}{about}{rows}"
                f"{self._pages(path, doc.get('pages') or [])}<h2>Sidecars</h2><ul>{links}</ul>")
        return page(path.name, body)

    def _pages(self, path: Path, pages: list[Any]) -> str:
        """A document's pages, each with its preview and what its record holds as text (the
        first PAGES_SHOWN; the JSON sidecar has them all)."""
        shown = [p for p in pages[:PAGES_SHOWN] if isinstance(p, dict)]
        if not shown:
            return ""
        parts = []
        for index, record in enumerate(shown, start=1):
            number = record.get("page", index)
            texts = "".join(f"<tr><td>{e(k)}</td><td><pre>{e(v)}</pre></td></tr>" for k, v in record.items()
                            if isinstance(v, str) and v)
            parts.append(f'<h3>page {e(number)}</h3><img class="preview" loading="lazy" alt="page {e(number)}" '
                         f'src="/thumb?path={q(str(path))}&page={e(number)}&size={PREVIEW_EDGE}"><table>{texts}</table>')
        more = (f"<p>… and {len(pages) - PAGES_SHOWN} more page(s) in the JSON sidecar</p>"
                if len(pages) > PAGES_SHOWN else "")
        return f"<h2>Pages ({len(pages)})</h2>" + "".join(parts) + more

    def sidecar(self, query: dict[str, str]) -> Response:
        """A sidecar of a served file, as plain text (never as HTML): only one the journal
        records we wrote for it (or its JSON sidecar), at most SIDECAR_BYTES of it read."""
        media = self.inside(query.get("path"))
        name = query.get("name", "")
        if media is None:
            return not_found()
        watch = self.config.watch_for(media)
        job = self.reader.get(str(media))
        assert watch is not None
        target = Target.for_media(media, watch.output, watch.path)
        if job is None or name not in {target.json_path.name, *(job.outputs or {})}:
            return not_found()
        path = target.folder / name
        if not path.is_file() or path.is_symlink():
            return not_found()
        with open(path, "rb") as f:
            return Response(200, f.read(SIDECAR_BYTES), "text/plain; charset=utf-8")

    # --- thumbnails ------------------------------------------------------------------------------

    def thumb(self, query: dict[str, str]) -> Response:
        path = self.inside(query.get("path"))
        if path is None:
            return not_found()
        edge = PREVIEW_EDGE if query.get("size") == str(PREVIEW_EDGE) else THUMB_EDGE
        st = path.stat()
        key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{edge}|{query.get('page')}|{query.get('t')}"
                             .encode("utf-8", "surrogateescape")).hexdigest()
        cached = self.thumbs / f"{key}.jpg"
        if not cached.exists():
            try:
                data = self._render(path, edge, query)
            except (MediaError, OSError, ValueError) as exc:
                return Response(404, f"no preview: {exc}\n".encode(), "text/plain; charset=utf-8")
            self._store(cached, data)
        return Response(200, cached.read_bytes(), "image/jpeg", {"Cache-Control": "private, max-age=3600"})

    def _render(self, path: Path, edge: int, query: dict[str, str]) -> bytes:
        limits = self.config.limits()
        with open_media(path, limits) as opened:
            if opened.kind == "document":
                index = max(0, int(query.get("page") or 1) - 1)
                image = opened.document(limits).page(index)[0]
            elif opened.kind == "video":
                image = opened.frame(float(query.get("t") or 0.0))
            else:
                image = opened.image(limits, edge).images[0]
        image = image.convert("RGB")
        image.thumbnail((edge, edge), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=82)
        return buf.getvalue()

    def _store(self, cached: Path, data: bytes) -> None:
        """Written atomically; the oldest previews go when the cache passes its bound."""
        self.thumbs.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # one per request thread
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        with self._cache_lock:
            if self._cache_total is None:
                self._cache_total = sum(p.stat().st_size for p in self.thumbs.glob("*.jpg"))
            else:
                self._cache_total += len(data)
            if self._cache_total > self.cache_bytes:
                self._cache_total = self._evict()

    def _evict(self) -> int:
        """The oldest previews removed until the cache is within its bound; the bytes left."""
        files = sorted(self.thumbs.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files:
            if total <= self.cache_bytes:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
        return total


_STALE = Response(403, b"forbidden: the form is stale or not ours (reload the page)\n", "text/plain")


def _hostname(netloc: str) -> str:
    """The host of a Host header or an origin's netloc, lower-cased, without port or brackets."""
    netloc = netloc.strip().lower().rsplit("@", 1)[-1]
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _where(hit: Any) -> str:
    if hit.page is not None:
        return f"page {hit.page}"
    return f"at {hit.timestamp:.1f} s" if hit.timestamp is not None else ""


def _when_where(doc: dict[str, Any]) -> str:
    """Where and when the file was taken, and with what (its sidecar's ``context``), in a line."""
    found = doc.get("context")
    context: dict[str, Any] = found if isinstance(found, dict) else {}
    taken = context.get("taken_at")
    parts = [places.place_label(context), taken.replace("T", " ") if isinstance(taken, str) else None,
             context.get("camera") if isinstance(context.get("camera"), str) else None]
    shown = " · ".join(e(p) for p in parts if p)
    return f'<p class="ctx">{shown}</p>' if shown else ""


def _history(job: Any) -> str:
    """The journal's record of a file, as a line of the file page."""
    if job is None:
        return "<p>journal: no entry</p>"
    line = f"<p>journal: {e(job.state)}, attempts {job.attempts}"
    if job.finished:
        line += f", finished {e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.finished)))}"
    if job.last_error:
        line += f', last error <span class="err">{e(job.last_error)}</span>'
    return line + "</p>"


def _short(result: Any, limit: int = 160) -> str:
    text = result if isinstance(result, str) else ", ".join(str(r) for r in result if isinstance(r, (str, int, float)))
    return text if len(text) <= limit else text[:limit] + "…"


def q(value: str) -> str:
    """A value in a URL's query string (then HTML-escaped by the caller's ``e`` where needed):
    a path's own bytes, percent-encoded, so any name comes back as it is (``_query``)."""
    return e(urllib.parse.quote(os.fsencode(value), safe="/"))


def _query(text: str) -> dict[str, str]:
    """A query string's values, each the last given, bytes that are not UTF-8 kept as the file
    system's own (a Latin-1 name is found again)."""
    return {k: v[-1] for k, v in urllib.parse.parse_qs(text, encoding="utf-8", errors="surrogateescape").items()}


def _outcome(entry: dict[str, Any]) -> str:
    """A task's entry as the file page shows it: its result, its error, or why it was skipped."""
    if "result" in entry:
        return _show(entry["result"])
    if "skipped" in entry:
        gate = entry.get("gate")
        return f"skipped: {entry['skipped']}" + (f" (gate answered {gate.get('answer')!r})"
                                                  if isinstance(gate, dict) else "")
    return _show(entry.get("error"))


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)


def open_journal(config: Config) -> Journal:
    """`serve`'s journal: the daemon's, never a new one."""
    if not config.state.db.exists():
        raise JournalError(f"no journal at {config.state.db}: start the daemon (smolvlm-watch run) first")
    return Journal(config.state.db)


def token(config: Config) -> str | None:
    """The token a browser must give (web.token_env), or None; a named variable that is unset
    stops the start instead of serving without one."""
    name = config.web.token_env
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError([f"web.token_env: ${name} is not set (the token a browser must give)"],
                          str(config.source) if config.source else None)
    return value
