"""The web page (issue 18): served by a daemon processing files with the tiny model, driven over
HTTP and through a real browser (Debian's chromium, through playwright)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import daemon_config, journal_states, log_events, make_image, spawn, text_pdf, wait_for, write_trap_plugin

HOSTILE = "<img src=x onerror=alert(1)>.png"


def _get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """A daemon with web.listen on a free port, a slow task so a file can be seen in flight, and
    three files done: a photo with a hostile name, a PDF with a text layer, a plain photo. One
    per module (and xdist worker): each test adds files of its own names and looks only at them."""
    tmp_path = tmp_path_factory.mktemp("site")
    write_trap_plugin(tmp_path, "slowpoke", "slow", "slow.png", "time.sleep(4)")
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr, slow]", outputs="[json, txt]",
                        extra="web: {listen: '127.0.0.1:0'}\nplugins: [slowpoke]\n")
    cfg.write_text(cfg.read_text().replace("ocr: {max_new_tokens: 2, image_splitting: false}",
                                           "ocr: {max_new_tokens: 2, image_splitting: false, use_text_layer: always}"))
    inbox = tmp_path / "inbox"
    files = [make_image(inbox / HOSTILE), make_image(inbox / "beach.png", color=(20, 120, 220)),
             text_pdf(inbox / "contract.pdf", ["Invoice 2026 for ACME", "Договор поставки № 17"])]
    proc = spawn(cfg, {"PYTHONPATH": str(tmp_path)})
    events = log_events(proc)
    db = tmp_path / "state" / "journal.sqlite"
    try:
        wait_for(lambda: any(e["event"] == "http_listening" for e in events), 120, what="the web listener")
        address = next(e["address"] for e in events if e["event"] == "http_listening")
        wait_for(lambda: all(journal_states(db).get(str(f)) == "done" for f in files), 90, what="files done")
        yield {"base": f"http://{address}", "inbox": inbox, "files": files, "db": db, "tmp": tmp_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.smoke
def test_pages_escape_every_value_and_serve_only_watched_files(site):
    base, inbox = site["base"], site["inbox"]
    code, headers, body = _get(base + "/")
    text = body.decode()
    assert code == 200 and "daemon: <b>up</b>" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;.png" in text  # the name as text
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for bad in ("../../etc/passwd", "/etc/passwd", str(inbox / ".." / ".." / "config.yaml"), "relative.png",
                str(inbox / "missing.png")):
        for route in ("/file", "/thumb", "/sidecar"):
            code, _, _ = _get(f"{base}{route}?path={urllib.parse.quote(bad)}&name=x")
            assert code == 404, (route, bad)
    (inbox / "escape.png").symlink_to("/etc/hostname")  # a symlink out of the watch
    assert _get(f"{base}/thumb?path={urllib.parse.quote(str(inbox / 'escape.png'))}")[0] == 404

    photo = inbox / "beach.png"
    code, headers, data = _get(f"{base}/thumb?path={urllib.parse.quote(str(photo))}")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    assert data != photo.read_bytes()  # re-encoded, never the original
    code, _, data = _get(f"{base}/thumb?path={urllib.parse.quote(str(inbox / 'contract.pdf'))}&page=2")
    assert code == 200 and data[:3] == b"\xff\xd8\xff"
    assert list((site["tmp"] / "state" / "thumbnails").glob("*.jpg"))  # cached in the state folder

    code, _, body = _get(f"{base}/search?q={urllib.parse.quote('поставки')}")
    page = body.decode()
    assert code == 200 and "contract.pdf" in page and "page 2" in page and "<mark>поставки</mark>" in page
    code, _, body = _get(f"{base}/file?path={urllib.parse.quote(str(inbox / HOSTILE))}")
    assert code == 200 and "<img src=x" not in body.decode() and "journal: done" in body.decode()
    code, headers, body = _get(f"{base}/sidecar?path={urllib.parse.quote(str(photo))}&name=beach.png.smolvlm.json")
    assert code == 200 and headers["Content-Type"].startswith("text/plain") and json.loads(body)["source"]

    assert _get(base + "/retry", data=b"path=/x&csrf=wrong")[0] == 403  # no token from our form: refused
    assert _get(base + "/", data=b"x=1")[0] == 405  # read-only but for retry


def test_retry_from_the_status_page_needs_its_form(site):
    base, inbox, db = site["base"], site["inbox"], site["db"]
    broken = inbox / "broken.png"
    broken.write_bytes(b"not an image")
    wait_for(lambda: journal_states(db).get(str(broken)) == "failed", 60, what="broken failed")
    page = _get(base + "/")[2].decode()
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    make_image(broken)  # fixed: now the retry can succeed
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(base + "/retry", data=urllib.parse.urlencode(
        {"csrf": token, "path": str(broken)}).encode())
    try:
        opener.open(request, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 303
    wait_for(lambda: journal_states(db).get(str(broken)) == "done", 60, what="retried and done")


@pytest.fixture
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium); the HTTP-level tests still ran")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _until(tab, expression: str, timeout: float = 30) -> None:
    """Poll ``expression`` in the page until it is true (playwright's own timeout, 30 s). Not
    ``wait_for_function``: once its first check fails it polls by eval inside the page, which
    the page's Content-Security-Policy (script-src 'self') rightly refuses."""
    deadline = time.monotonic() + timeout
    while not tab.evaluate(expression):
        assert time.monotonic() < deadline, f"never true in the page: {expression}"
        time.sleep(0.1)


@pytest.mark.smoke
def test_the_three_pages_in_a_real_browser(site, browser, tmp_path_factory):
    base, inbox = site["base"], site["inbox"]
    shots = tmp_path_factory.mktemp("screenshots")
    tab = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    tab.goto(base + "/")
    assert tab.locator(f"text={HOSTILE}").count() >= 1  # shown as text
    slow = make_image(inbox / "slow.png", color=(200, 200, 20))  # runs 4 s: seen in flight, then done
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while "done" not in seen and time.monotonic() < deadline:  # the panel refreshes itself: no reload here
        state = tab.evaluate("(() => { const r = [...document.querySelectorAll('#panel tr')]"
                             ".find(r => r.innerText.includes('slow.png')); return r ? r.cells[1].innerText : ''; })()")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        time.sleep(0.3)
    assert seen[-1] == "done" and len(seen) >= 2 and seen[0] in ("pending", "running"), seen
    tab.screenshot(path=str(shots / "status.png"), full_page=True)

    tab.goto(base + "/search?q=" + urllib.parse.quote("Invoice"))
    images = tab.locator(".card img")
    assert images.count() >= 1
    _until(tab, "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
    tab.screenshot(path=str(shots / "search.png"), full_page=True)

    tab.goto(base + "/file?path=" + urllib.parse.quote(str(inbox / HOSTILE)))
    _until(tab, "document.querySelector('main img').naturalWidth > 0")
    assert tab.locator("h1").inner_text() == HOSTILE
    tab.screenshot(path=str(shots / "file.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844})  # issue 27, 8: a phone, the preview bounded
    phone.goto(base + "/file?path=" + urllib.parse.quote(str(inbox / "beach.png")))
    _until(phone, "document.querySelector('main img').naturalWidth > 0")
    box = phone.locator("main img").bounding_box()
    assert box["width"] <= 390 and box["height"] <= 0.7 * 844 + 1, box
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    phone.screenshot(path=str(shots / "file-phone.png"), full_page=True)
    tab.goto(base + "/file?path=" + urllib.parse.quote("../../etc/passwd"))
    assert "not found" in tab.content()
    assert dialogs == []  # no alert() ran anywhere
    print(f"\nscreenshots: {shots / 'status.png'} {shots / 'search.png'} {shots / 'file.png'}")
    if os.environ.get("SMOLVLM_WEB_SHOTS"):
        for name in ("status.png", "search.png", "file.png", "file-phone.png"):
            shutil.copy(shots / name, Path(os.environ["SMOLVLM_WEB_SHOTS"]) / f"web-{name}")
    assert slow.exists()


def test_serve_shows_a_journal_without_the_daemon(tmp_path):
    """`smolvlm-watch serve`: the same pages over a journal the daemon left (it is not running)."""
    import subprocess
    import sys

    from smolvlm_watch.journal import Finished, Journal
    from smolvlm_watch.search import Passage

    inbox = tmp_path / "inbox"
    photo = make_image(inbox / "beach.png")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("watches: [{path: ./inbox}]\nstate: {db: ./state/journal.sqlite}\n"
                   "web: {listen: '127.0.0.1:0'}\nlogging: {format: json}\n")
    assert subprocess.run([sys.executable, "-m", "smolvlm_watch.cli", "serve", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60).returncode == 1  # no journal: no page
    journal = Journal(tmp_path / "state" / "journal.sqlite")
    journal.enqueue(str(photo), str(inbox), 1, 1.0)
    job = journal.lease(60)
    journal.done(job.id, Finished("ab" * 32, "fp", 1.0, 1, 1.0, {}, [Passage("caption", "a sandy beach")], "image"))
    journal.close()
    proc = subprocess.Popen([sys.executable, "-m", "smolvlm_watch.cli", "serve", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert line["event"] == "http_listening"
        base = f"http://{line['address']}"
        page = _get(base + "/")[2].decode()
        assert "daemon: <b>down</b>" in page and "beach.png" in page
        page = _get(base + "/search?q=sandy")[2].decode()
        assert "1 hit(s)" in page and "<mark>sandy</mark>" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _raw(base: str, head: str, wait: float = 5.0) -> str:
    """One request as bytes on a socket (headers only: a body promised and never sent), and the
    status line of the answer."""
    import socket

    host, port = urllib.parse.urlsplit(base).netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(head.encode())
        return s.recv(200).decode(errors="replace").splitlines()[0]


def test_only_what_is_ours_is_served_to_this_host_and_bodies_are_bounded(site):
    """Issue 26, 1-4: any file under a watch was served (a .env, passwords beside a photo); a
    rebinding Host got the page and could POST; a body of any size was buffered; a 1 GiB
    sidecar was read whole."""
    base, inbox = site["base"], site["inbox"]
    photo = inbox / "beach.png"
    (inbox / ".env").write_text("SECRET=1\n")
    (inbox / "beach.png.passwords").write_text("hunter2\n")
    (inbox / ".private").mkdir()
    make_image(inbox / ".private" / "hidden.png")
    for route, path, name in (("/sidecar", photo, "beach.png.passwords"), ("/sidecar", inbox / ".env", "x"),
                              ("/thumb", inbox / ".env", ""), ("/file", inbox / ".private" / "hidden.png", ""),
                              ("/thumb", inbox / ".private" / "hidden.png", "")):
        code, _, body = _get(f"{base}{route}?path={urllib.parse.quote(str(path))}&name={name}")
        assert code == 404 and b"hunter2" not in body and b"SECRET" not in body, (route, path, name)
    big = inbox / "beach.png.txt"  # a recorded output, grown by someone to 6 MB
    big.write_bytes(b"x" * 6_000_000)
    code, _, body = _get(f"{base}/sidecar?path={urllib.parse.quote(str(photo))}&name=beach.png.txt")
    assert code == 200 and len(body) == 4_000_000

    port = urllib.parse.urlsplit(base).port
    code, _, body = _get(base + "/", headers={"Host": "rebind.attacker.example"})
    assert code == 403 and b"csrf" not in body.lower()
    assert _get(base + "/", headers={"Host": f"localhost:{port}"})[0] == 200
    rebound = {"Host": "rebind.attacker.example", "Origin": "http://rebind.attacker.example"}
    assert _get(base + "/retry", data=b"path=/x&csrf=x", headers=rebound)[0] == 403
    assert _get(base + "/retry", data=b"path=/x&csrf=x", headers={"Origin": "http://evil.example"})[0] == 403

    host = f"Host: 127.0.0.1:{port}\r\n"
    assert _raw(base, f"POST /retry HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n") == "HTTP/1.0 400 Bad Request"
    start = time.monotonic()
    assert _raw(base, f"POST /retry HTTP/1.1\r\n{host}Content-Length: 209715200\r\n\r\n").endswith(
        "413 Request Entity Too Large")
    assert time.monotonic() - start < 2  # answered at once, nothing of the body read
    assert _raw(base, f"POST /retry HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n").endswith(
        "411 Length Required")


def test_a_heavy_search_is_bounded_and_never_holds_the_daemons_journal(tmp_path, tiny_model):
    """Issue 26, 5: a /search of 1,000 OR terms took 52 s and held the journal the worker and
    /metrics needed. The page reads through a connection of its own, queries are bounded in
    words, and a search is stopped past its time budget."""
    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.daemon import Daemon
    from smolvlm_watch.search import Passage, SearchError

    cfg = daemon_config(tmp_path, tiny_model, extra="web: {listen: '127.0.0.1:0'}\n")
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        daemon.http = daemon._listen()
        reader = daemon.web.reader
        assert reader is not daemon.journal and reader.readonly  # its own connection, read-only
        base = f"http://{daemon.http[0].address}"
        code, _, body = _get(base + "/search?q=" + urllib.parse.quote(" OR ".join(f"w{i:03d}" for i in range(1000))))
        assert code == 200 and b"a search takes at most 32 words and 500 characters" in body
        for i in range(3000):
            daemon.journal.index.put(f"/x/{i}.png", "/x", "image", [Passage("caption", f"a sandy beach number {i}")])
        with pytest.raises(SearchError, match="the search took longer than 0 s and was stopped"):
            reader.index.search("sandy", budget=0.0)
        assert len(reader.index.search("sandy", limit=5, budget=2.0)) == 5
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_reload_applies_listeners_token_and_watches(tmp_path, tiny_model, monkeypatch):
    """Issue 26, 6: after SIGHUP a moved web.listen was not served, an added metrics.listen was
    not, an added web.token_env was not enforced, and a removed watch's files were still served."""
    import socket

    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.daemon import Daemon

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    first, moved, metrics = free(), free(), free()
    cfg = daemon_config(tmp_path, tiny_model, extra=f"web: {{listen: '127.0.0.1:{first}'}}\n")
    photo = make_image(tmp_path / "inbox" / "beach.png")
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        daemon.http = daemon._listen()
        thumb = f"/thumb?path={urllib.parse.quote(str(photo))}"
        assert _get(f"http://127.0.0.1:{first}{thumb}")[0] == 200
        monkeypatch.setenv("SMOLVLM_WEB_TOKEN", "t0ken")
        cfg.write_text(cfg.read_text().replace(f"web: {{listen: '127.0.0.1:{first}'}}",
                                               f"web: {{listen: '127.0.0.1:{first}', token_env: SMOLVLM_WEB_TOKEN}}\n"
                                               f"metrics: {{listen: '127.0.0.1:{metrics}'}}"))
        daemon.reload()
        assert _get(f"http://127.0.0.1:{first}/")[0] == 401  # the token is asked for at once
        assert _get(f"http://127.0.0.1:{first}/", headers={"Authorization": "Bearer t0ken"})[0] == 200
        assert _get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        (tmp_path / "other").mkdir()
        cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{first}", f"127.0.0.1:{moved}")
                       .replace("path: ./inbox", "path: ./other"))
        daemon.reload()
        with pytest.raises(urllib.error.URLError):
            _get(f"http://127.0.0.1:{first}/")  # the old address is closed
        auth = {"Authorization": "Bearer t0ken"}
        assert _get(f"http://127.0.0.1:{moved}/", headers=auth)[0] == 200
        assert _get(f"http://127.0.0.1:{moved}{thumb}", headers=auth)[0] == 404  # its watch was removed
        monkeypatch.delenv("SMOLVLM_WEB_TOKEN")
        daemon.reload()  # the token's variable is gone: refused, never served without a token
        assert daemon.restart_needed is None and _get(f"http://127.0.0.1:{moved}/")[0] == 401
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_latin1_file_name_is_shown_linked_and_found(site):
    """Issue 27, 1: a name that is not UTF-8 (`Rechnung M\\xfcller` from an SMB share) made `/`,
    the panel and search answer 500 UnicodeEncodeError until the failure was cleared."""
    base, inbox, db = site["base"], site["inbox"], site["db"]
    latin = inbox / os.fsdecode(b"Rechnung M\xfcller.png")
    make_image(latin, color=(9, 99, 9))
    wait_for(lambda: journal_states(db).get(str(latin)) == "done", 60, what="the Latin-1 file done")
    for route in ("/", "/panel"):
        code, _, body = _get(base + route)
        assert code == 200 and "Rechnung M\ufffdller.png" in body.decode(), route
    link = "/file?path=" + urllib.parse.quote(os.fsencode(str(latin)), safe="/")
    code, _, body = _get(base + link)
    assert code == 200 and "journal: done" in body.decode()
    assert _get(base + "/thumb?path=" + urllib.parse.quote(os.fsencode(str(latin)), safe="/"))[0] == 200


def test_serve_on_a_busy_port_says_so_and_not_invalid_config(tmp_path, tiny_model, run_cli):
    """Issue 27, 8: a port in use was reported as an invalid config."""
    import socket

    from smolvlm_watch.journal import Journal

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = daemon_config(tmp_path, tiny_model, extra=f"web: {{listen: '127.0.0.1:{port}'}}\n")
        Journal(tmp_path / "state" / "journal.sqlite").close()  # serve reads the daemon's journal
        code, _, err = run_cli("serve", "-c", cfg)
    assert code == 1 and "invalid config" not in err
    assert err.strip() == (f"error: cannot listen on 127.0.0.1:{port} (web.listen in {cfg}): Address already in use; "
                           "stop what uses it, or set web.listen to another address")


def test_a_documents_page_shows_each_page_with_its_own_text(site):
    """Issue 27, 8: a document showed page 1 only and its OCR as one blob."""
    base, inbox = site["base"], site["inbox"]
    code, _, body = _get(f"{base}/file?path={urllib.parse.quote(str(inbox / 'contract.pdf'))}")
    text = body.decode()
    assert code == 200 and "<h2>Pages (2)</h2>" in text and "<h3>page 2</h3>" in text
    first, second = text.split("<h3>page 2</h3>")
    assert "Invoice 2026 for ACME" in first.split("<h3>page 1</h3>")[1] and "Договор поставки № 17" in second
    assert "&page=2&size=1280" in second


def test_a_documents_preview_is_held_to_the_document_limits(tmp_path):
    """Issue 27, 8: previews rendered a document under the media limits only, so a page that
    processing refuses (document.max_page_pixels, document.max_pages) was decoded for the web
    page anyway; both now take their limits from one place (Config.limits)."""
    from smolvlm_watch import config as configmod
    from smolvlm_watch.journal import Journal
    from smolvlm_watch.web import Web

    inbox = tmp_path / "inbox"
    pdf = text_pdf(inbox / "letter.pdf", ["one", "two", "three"])

    def preview(name: str, document: dict) -> tuple[int, bytes]:
        db = tmp_path / name / "journal.sqlite"  # a state folder, and its preview cache, of its own
        cfg = configmod.parse({"watches": [str(inbox)], "document": document, "state": {"db": str(db)}}, tmp_path)
        journal = Journal(db)
        try:
            response = Web(cfg, journal).thumb({"path": str(pdf), "page": "1"})
        finally:
            journal.close()
        return response.status, response.body

    assert preview("defaults", {})[0] == 200
    code, body = preview("pixels", {"max_page_pixels": 1_000_000})  # a letter page at 200 dpi: 1700x2200
    assert code == 404 and b"page 1: 1700x2200 = 3740000 pixels, over the document.max_page_pixels" in body, body
    code, body = preview("pages", {"max_pages": 2})
    assert (code, body) == (404, b"no preview: " + str(pdf).encode() + b": the document has 3 pages, over the "
                            b"document.max_pages limit of 2\n"), body


def test_status_and_the_web_page_say_the_same_from_one_report(tmp_path, run_cli):
    """Issue 32, 3: `status` and the web panel each read the journal their own way: `status`
    named the configured model where the page named the one the daemon runs. Both render one
    StatusReport now: the same model, queue, hour's work and index."""
    from smolvlm_watch import config as configmod
    from smolvlm_watch.daemon_record import META_KEY, DaemonRecord
    from smolvlm_watch.journal import Finished, Journal
    from smolvlm_watch.search import Passage
    from smolvlm_watch.web import Web

    inbox = tmp_path / "inbox"
    photos = [make_image(inbox / f"{n}.png") for n in ("a", "b", "c")]
    cfg = tmp_path / "config.yaml"
    cfg.write_text("model: {id: configured/model}\nwatches: [{path: ./inbox}]\nstate: {db: ./state/journal.sqlite}\n")
    journal = Journal(tmp_path / "state" / "journal.sqlite")
    for photo in photos:
        journal.enqueue(str(photo), str(inbox), 1, 1.0)
    for _ in range(2):
        job = journal.lease(60)
        journal.done(job.id, Finished("ab" * 32, "fp", 3.0, 1, 1.0, {}, [Passage("caption", "a beach")], "image"))
    journal.set_meta(META_KEY, DaemonRecord(pid=1, model="served/model", model_loaded=True).to_json())
    code, out, err = run_cli("status", "-c", cfg, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert (status["model"], status["queue"]["done"], status["queue"]["pending"], status["done_last_hour"],
            status["index"]["passages"]) == ("served/model", 2, 1, 2, 2)
    panel = Web(configmod.load(cfg), journal).panel({}).body.decode()
    journal.close()
    assert "model served/model (not loaded" in panel  # the daemon is not running: its model is not loaded
    assert "queue: pending 1, running 0, done 2" in panel and "done in the last hour 2" in panel
    assert "search index 2 passages" in panel
