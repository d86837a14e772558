"""The web page (issue 18): served by a daemon processing files with the tiny model, driven over
HTTP and through a real browser (Debian's chromium, through playwright)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import daemon_config, journal_states, make_image, spawn, text_pdf, wait_for, write_trap_plugin

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


@pytest.fixture
def site(tmp_path, tiny_model):
    """A daemon with web.listen on a free port, a slow task so a file can be seen in flight, and
    three files done: a photo with a hostile name, a PDF with a text layer, a plain photo."""
    write_trap_plugin(tmp_path, "slowpoke", "slow", "slow.png", "time.sleep(4)")
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr, slow]", outputs="[json, txt]",
                        extra="web: {listen: '127.0.0.1:0'}\nplugins: [slowpoke]\n")
    cfg.write_text(cfg.read_text().replace("ocr: {max_new_tokens: 2, image_splitting: false}",
                                           "ocr: {max_new_tokens: 2, image_splitting: false, use_text_layer: always}"))
    inbox = tmp_path / "inbox"
    files = [make_image(inbox / HOSTILE), make_image(inbox / "beach.png", color=(20, 120, 220)),
             text_pdf(inbox / "contract.pdf", ["Invoice 2026 for ACME", "Договор поставки № 17"])]
    proc = spawn(cfg, {"PYTHONPATH": str(tmp_path)})
    events: list[dict] = []
    threading.Thread(target=lambda: [events.append(json.loads(line)) for line in proc.stdout], daemon=True).start()
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
    tab.goto(base + "/file?path=" + urllib.parse.quote("../../etc/passwd"))
    assert "not found" in tab.content()
    assert dialogs == []  # no alert() ran anywhere
    print(f"\nscreenshots: {shots / 'status.png'} {shots / 'search.png'} {shots / 'file.png'}")
    if os.environ.get("SMOLVLM_WEB_SHOTS"):
        for name in ("status.png", "search.png", "file.png"):
            shutil.copy(shots / name, Path(os.environ["SMOLVLM_WEB_SHOTS"]) / name)
    assert slow.exists()


def test_serve_shows_a_journal_without_the_daemon(tmp_path):
    """`smolvlm-watch serve`: the same pages over a journal the daemon left (it is not running)."""
    import subprocess
    import sys

    from smolvlm_watch.journal import Journal
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
    journal.done(job.id, "ab" * 32, "fp", 1.0, 1, 1.0, {}, [Passage("caption", "a sandy beach")], "image")
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
