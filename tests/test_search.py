"""`search` (issue 15): what the daemon wrote is found again — a caption word, a substring inside
an OCR word, a Cyrillic phrase on page 2 of a PDF, a video frame's text with its timestamp — and
the index stays true to the sidecars through re-processing, renames, deletions, `--reindex` and
kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time

import pytest

from helpers import InProcess, journal_states, make_image, read_sidecar, spawn, text_pdf, wait_for
from test_video import make_clip


@pytest.fixture
def fixed(monkeypatch):
    """Known results (the tiny model's text is random): what search must find."""
    from smolvlm_watch_plugins.caption import Caption
    from smolvlm_watch_plugins.ocr import Ocr

    state = {"caption": "A sandy beach at sunset"}
    real_ocr = Ocr.parse

    def ocr(self, answers, spec, media):
        if media.kind == "video":
            return [{"timestamp": t, "text": f"SCOREBOARD {i}"} for i, t in enumerate(media.clip.timestamps)]
        if media.kind == "image":
            return "Invoice: CONTRACTUAL terms apply"
        return real_ocr(self, answers, spec, media)  # a PDF page: its text layer

    monkeypatch.setattr(Caption, "parse",
                        lambda self, a, s, m: state["caption"] if m.kind == "image" else f"a {m.kind}")
    monkeypatch.setattr(Ocr, "parse", ocr)
    return state


def _config(tmp_path, tiny_model, prompt: str = "Describe this image in detail."):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model: {{path: {tiny_model}, threads: 1}}
tasks:
  caption: {{max_new_tokens: 2, prompt: "{prompt}"}}
  ocr: {{max_new_tokens: 2, image_splitting: false, use_text_layer: always}}
watches:
  - {{path: ./inbox, tasks: [caption, ocr], outputs: [json, txt], settle_seconds: 0.3, poll_interval: 0.3}}
video: {{max_frames: 3}}
state: {{db: ./state/journal.sqlite, retry_base_seconds: 0.05}}
logging: {{format: json}}
""")
    return cfg


def _search(run_cli, cfg, *args):
    code, out, err = run_cli("search", "-c", cfg, "--json", *args)
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.smoke
def test_search_finds_results_and_stays_true_to_the_sidecars(tmp_path, tiny_model, run_cli, fixed):
    inbox = tmp_path / "inbox"
    photo = make_image(inbox / "beach.png")
    scan = text_pdf(inbox / "scan.pdf", ["Invoice 2026 for ACME", "Договор поставки № 17"])
    clip = make_clip(inbox / "clip.mp4", seconds=3)
    cfg = _config(tmp_path, tiny_model)
    d = InProcess(cfg)
    try:
        d.wait_done([photo, scan, clip], timeout=120)
        code, hits, _ = _search(run_cli, cfg, "beach")
        assert code == 0 and [(h["path"], h["task"], h["page"], h["timestamp"]) for h in hits] == [
            (str(photo), "caption", None, None)]
        assert hits[0]["snippet"] == "A sandy beach at sunset" and isinstance(hits[0]["score"], float)
        code, hits, _ = _search(run_cli, cfg, "NTRACTU")  # inside a word, any case
        assert [(h["path"], h["task"]) for h in hits] == [(str(photo), "ocr")]
        code, hits, _ = _search(run_cli, cfg, '"договор поставки"')  # a Cyrillic phrase, page 2
        assert [(h["path"], h["task"], h["page"]) for h in hits] == [(str(scan), "ocr", 2)]
        assert hits[0]["snippet"] == "Договор поставки № 17"
        code, hits, _ = _search(run_cli, cfg, "scoreboard 2")
        assert [(h["path"], h["task"], h["timestamp"]) for h in hits] == [(str(clip), "ocr", 2.5)]
        code, hits, _ = _search(run_cli, cfg, "invoice", "--kind", "document")
        assert [h["page"] for h in hits] == [1]
        code, hits, _ = _search(run_cli, cfg, "invoice", "--task", "caption")
        assert code == 1 and hits == []
        code, hits, _ = _search(run_cli, cfg, "invoice", "--under", str(tmp_path / "elsewhere"))
        assert code == 1
        code, out, _ = run_cli("search", "-c", cfg, "поставки")
        assert out == f"{scan}  ocr  page 2  Договор поставки № 17\n"
        code, _, err = run_cli("search", "-c", cfg, '"unbalanced')
        assert code == 2 and err.startswith("error: the index cannot parse")
        code, _, err = run_cli("search", "-c", cfg, "ab")
        assert code == 2 and "at least 3 characters" in err
        code, out, _ = run_cli("status", "-c", cfg, "--json")
        assert json.loads(out)["index"]["passages"] >= 6

        fixed["caption"] = "A snowy mountain"  # a new prompt: re-processed, the old text goes
        before = json.loads(d.journal.meta("daemon"))["fingerprints"]
        cfg.write_text(cfg.read_text().replace("Describe this image in detail.", "What is in this photo?"))
        d.daemon.reload_requested.set()
        wait_for(lambda: json.loads(d.journal.meta("daemon"))["fingerprints"] != before, 10, what="the reload")
        code, out, err = run_cli("backfill", "-c", cfg, "--stale")
        assert code == 0, out + err
        d.daemon.worker.wake.set()
        wait_for(lambda: read_sidecar(photo)["tasks"]["caption"]["result"] == "A snowy mountain", 60)
        wait_for(lambda: _search(run_cli, cfg, "mountain")[0] == 0, 30, what="the new caption indexed")
        assert _search(run_cli, cfg, "beach")[0] == 1

        moved = inbox / "renamed.png"
        photo.rename(moved)  # a rename: the hit shows the new path
        wait_for(lambda: [h["path"] for h in _search(run_cli, cfg, "mountain")[1]] == [str(moved)], 30,
                 what="the hit at the new path")
        scan.unlink()  # gone: out of the results
        wait_for(lambda: _search(run_cli, cfg, "поставки")[0] == 1, 30, what="the deleted PDF out of the results")
    finally:
        d.stop()


def test_reindex_builds_the_index_from_sidecars_written_before_it(tmp_path, tiny_model, run_cli, fixed):
    inbox = tmp_path / "inbox"
    photo = make_image(inbox / "beach.png")
    scan = text_pdf(inbox / "sub" / "scan.pdf", ["Invoice 2026 for ACME", "Договор поставки № 17"])
    make_image(inbox / "no-sidecar.png", color=(1, 2, 3))
    cfg = _config(tmp_path, tiny_model)
    code, out, err = run_cli("process", photo, scan, "-c", cfg, "--json")  # no daemon, no journal yet
    assert code == 0, out + err
    assert run_cli("search", "-c", cfg, "beach")[0] == 1  # nothing indexed: no journal
    code, out, _ = run_cli("search", "-c", cfg, "--reindex")
    assert code == 0
    assert out.startswith("reindexed 2 file(s) (") and "1 without a JSON sidecar" in out
    assert [h["path"] for h in _search(run_cli, cfg, "beach")[1]] == [str(photo)]
    assert [h["page"] for h in _search(run_cli, cfg, "поставки")[1]] == [2]
    photo.write_bytes(photo.read_bytes() + b"\0")  # the sidecar no longer describes it
    code, out, _ = run_cli("search", "-c", cfg, "--reindex", inbox / "beach.png")
    assert "0 file(s)" in out and "1 whose sidecar describes an older version" in out
    assert _search(run_cli, cfg, "beach")[0] == 1 and _search(run_cli, cfg, "поставки")[0] == 0


def test_a_kill_during_a_burst_leaves_index_and_sidecars_agreeing(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("tasks: [caption, ocr]", "tasks: [caption]"))
    db = tmp_path / "state" / "journal.sqlite"
    images = [make_image(tmp_path / "staging" / f"b{i:02d}.png", color=(i * 9, 40, 200 - i * 9)) for i in range(14)]
    def done() -> int:
        return sum(s == "done" for s in journal_states(db).values())

    for round_ in range(3):  # each kill lands as a file is recorded, with the next ones in flight
        before = done()
        proc = spawn(cfg)
        if round_ == 0:
            for img in images:
                shutil.copy2(img, inbox / img.name)
        try:
            wait_for(lambda before=before, proc=proc: done() > before or proc.poll() is not None, 60,
                     what="one more file done")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert done() < len(images), "killed too late to test anything"
    d = InProcess(cfg)  # the restart after the kills: what they left is all it sees
    try:
        d.wait_done([inbox / i.name for i in images], 180)
    finally:
        d.stop()
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT path, text FROM passages WHERE task = 'caption'").fetchall())
    for img in images:
        path = inbox / img.name
        caption = read_sidecar(path)["tasks"]["caption"]["result"]
        assert rows.get(str(path)) == (caption if caption.strip() else None), path  # every done file searchable
    assert set(rows) <= {str(inbox / i.name) for i in images}  # no row for a file without a sidecar
    assert not [p for p in os.listdir(inbox) if p.startswith(".smolvlm-tmp-")]


def test_an_interrupted_reindex_leaves_the_index_as_it_was(tmp_path, tiny_model, run_cli, fixed, monkeypatch):
    """Issue 25, 14: a kill during `search --reindex` left 193 of 300 done files unfindable until
    a second reindex. The index is now built aside and swapped in with one transaction."""
    from smolvlm_watch import search as search_module
    from smolvlm_watch.cli import find, load_checked

    inbox = tmp_path / "inbox"
    photos = [make_image(inbox / f"p{i}.png", color=(i, 9, 9)) for i in range(4)]
    cfg = _config(tmp_path, tiny_model)
    assert run_cli("process", inbox, "-c", cfg, "--json")[0] == 0
    assert run_cli("search", "-c", cfg, "--reindex")[0] == 0
    assert len(_search(run_cli, cfg, "sandy", "--limit", "10")[1]) == 4
    real, calls = search_module.from_sidecar, []

    def killed(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill -9 leaves: the run ends mid-way
        return real(*args)

    monkeypatch.setattr(find, "from_sidecar", killed)
    with pytest.raises(KeyboardInterrupt):
        find._reindex(*load_checked(cfg), None)
    assert {h["path"] for h in _search(run_cli, cfg, "sandy", "--limit", "10")[1]} == set(map(str, photos))


def test_a_sidecar_newer_than_the_index_is_read_again_at_the_rescan(tmp_path, tiny_model, fixed):
    """Issue 25, 14: a journal restored from an older backup (or a `process` run beside the
    daemon) served hits for text the sidecars no longer hold and missed what they hold now."""
    cfg = _config(tmp_path, tiny_model)
    photo = make_image(tmp_path / "inbox" / "beach.png")
    d = InProcess(cfg)
    try:
        d.wait_done([photo])
        assert [h.path for h in d.journal.index.search("sandy")] == [str(photo)]
        sidecar = photo.with_name(photo.name + ".smolvlm.json")
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
        doc["tasks"]["caption"]["result"] = "Grandma's birthday in Lisbon"
        sidecar.write_text(json.dumps(doc), encoding="utf-8")
        later = time.time() + 5
        os.utime(sidecar, (later, later))  # written after the journal's row, as a restored journal sees it
        d.daemon.scan_all()
        assert [h.path for h in d.journal.index.search("Lisbon")] == [str(photo)]
        assert d.journal.index.search("sandy") == []
        d.daemon.scan_all()  # once: the next rescan finds it current
        assert d.journal.get(str(photo)).indexed >= later - 5
    finally:
        d.stop()


def test_a_word_too_many_files_hold_to_rank_in_time_shows_the_newest_first(tmp_path, monkeypatch, run_cli):
    """A word a million captions hold took 2.6 s to rank (bm25 orders every match), and the web
    page's search failed at its 2 s budget; the newest matches take a millisecond. Past
    ``RANK_SECONDS`` a search shows those, and says so in the CLI and on the web page."""
    from smolvlm_watch import search_index
    from smolvlm_watch.journal import Journal
    from smolvlm_watch.search import Passage
    from smolvlm_watch.web import Web
    from smolvlm_watch.cli import load_checked

    (tmp_path / "p").mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"watches: [{{path: {tmp_path / 'p'}}}]\nstate: {{db: {tmp_path / 'j.sqlite'}}}\n")
    journal = Journal(tmp_path / "j.sqlite")
    for i in range(3000):
        journal.index.put(str(tmp_path / "p" / f"{i:05d}.jpg"), str(tmp_path / "p"), "image",
                          [Passage("caption", f"a beach photo {i}" + " beach" * (i % 7))])
    best = journal.index.search("beach", limit=3)
    assert all(h.ranked for h in best) and [h.score for h in best] == sorted(h.score for h in best)
    monkeypatch.setattr(search_index, "RANK_SECONDS", 0.0)  # as if the index were a thousand times bigger
    newest = journal.index.search("beach", limit=3)
    assert [h.path for h in newest] == [str(tmp_path / "p" / f"{i:05d}.jpg") for i in (2999, 2998, 2997)]
    assert not any(h.ranked for h in newest)
    page = Web(load_checked(cfg)[0], journal).search({"q": "beach"}).body.decode()
    assert "60 hit(s) (more matches than could be ranked in time: the newest first" in page
    journal.close()
    code, out, err = run_cli("search", "-c", cfg, "beach", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2 and out.startswith(str(tmp_path / "p" / "02999.jpg"))
    assert err == ("note: more matches than could be ranked by relevance in 0 s: the newest 2 are shown (add words "
                   "to narrow the search)\n")
