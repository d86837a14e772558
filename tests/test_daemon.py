"""The daemon with the real watchdog observer on real folders and the tiny model."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog.testing

from helpers import (Driven, InProcess, daemon_config, journal_states, log_events, make_image, names, read_sidecar,
                     spawn, wait_for, write_trap_plugin)
from smolvlm_watch import daemon as daemon_module, media as media_module, watcher
from smolvlm_watch.cli import load_checked
from smolvlm_watch.daemon import Daemon
from smolvlm_watch.pipeline import Pipeline
from smolvlm_watch.media import base as media_base
from smolvlm_watch.journal import Journal, JournalLocked


@pytest.fixture
def running(tmp_path, tiny_model):
    started = []

    def start(cfg: Path | None = None) -> InProcess:
        d = InProcess(cfg or daemon_config(tmp_path, tiny_model))
        started.append(d)
        return d

    yield start
    for d in started:
        if d.thread.is_alive():
            d.stop()


def test_slow_copy_is_processed_once_after_it_ends(tmp_path, tiny_model):
    d = Driven(daemon_config(tmp_path, tiny_model))
    try:
        src = make_image(tmp_path / "src.png", (300, 300), fmt="PNG")
        data = src.read_bytes()
        dst = tmp_path / "inbox" / "slow.png"
        chunks = [data[i:i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
        with open(dst, "wb") as f:
            for chunk in chunks:  # each pause shorter than settle_seconds (0.3), ~1.6 s in all
                f.write(chunk)
                f.flush()
                d.step(0.2)
                assert d.state(dst) is None, "taken before the copy ended"
        d.heard(dst)
        d.settle()
        assert d.state(dst) == "done"
        d.rescan()
        job = d.journal.get(str(dst))
        assert job.attempts == 0 and d.daemon.engine.vision_passes == 1
        assert read_sidecar(dst)["source"]["sha256"] == job.sha256 and job.size == len(data)
    finally:
        d.stop()


def test_queued_files_share_batches_and_a_live_file_is_not_held_back(tmp_path, tiny_model, monkeypatch):
    """Files waiting at start are decoded ahead and batched together; later, one file alone on
    an empty queue runs at once in a batch of its own."""
    paths = [make_image(tmp_path / "inbox" / f"q{i}.png", (40 + i, 30), (i * 40, 90, 0), fmt="PNG")
             for i in range(6)]
    cfg = daemon_config(tmp_path, tiny_model, extra="runtime: {max_batch: 4, prefetch: 4}\n")
    batches: list[int] = []
    original = Pipeline.run

    def spy(self, items):
        batches.append(len(items))
        time.sleep(0.3)  # a slower model: the prefetch threads get ahead
        return original(self, items)

    hashed: list[str] = []
    real_hash = media_base.sha256_of

    def counting_hash(f, *args):
        hashed.append(Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).name)
        return real_hash(f, *args)

    monkeypatch.setattr(Pipeline, "run", spy)
    monkeypatch.setattr(media_base, "sha256_of", counting_hash)
    monkeypatch.setattr(media_module, "sha256_of", counting_hash)
    daemon = daemon_module.Daemon(cfg, lambda: load_checked(cfg))
    daemon.worker.start()
    thread = threading.Thread(target=daemon.supervisor.run, daemon=True)
    thread.start()
    try:
        journal = daemon.journal
        wait_for(lambda: all(journal.get(str(p)).state == "done" for p in paths), 60, what="queued files done")
        assert max(batches) > 1 and sum(batches) == 6, batches
        assert daemon.engine.vision_passes == 6
        assert sorted(hashed) == sorted(p.name for p in paths)  # the rename check's hash is the one recorded
        before = len(batches)
        live = make_image(tmp_path / "inbox" / "live.png", (50, 50), (0, 0, 255), fmt="PNG")
        wait_for(lambda: getattr(journal.get(str(live)), "state", None) == "done", 30, what="live file done")
        assert batches[before:] == [1]
        assert read_sidecar(live)["tasks"]["caption"]["fingerprint"]
    finally:
        daemon.stop()
        thread.join(10)
        daemon.shutdown()


def test_a_stop_mid_stream_gives_the_files_decoded_ahead_back_to_the_queue(tmp_path, tiny_model, monkeypatch):
    paths = [make_image(tmp_path / "inbox" / f"s{i}.png", (40, 30 + i), (i * 20, 0, 90), fmt="PNG")
             for i in range(10)]
    cfg = daemon_config(tmp_path, tiny_model, extra="runtime: {max_batch: 2, prefetch: 4}\n")
    original = Pipeline.run

    def slow(self, items):
        time.sleep(0.4)
        return original(self, items)

    monkeypatch.setattr(Pipeline, "run", slow)
    daemon = daemon_module.Daemon(cfg, lambda: load_checked(cfg))
    daemon.worker.start()
    try:
        journal = daemon.journal
        wait_for(lambda: journal.counts()["done"] >= 1, 30, what="a first file done")
        daemon.stop()
        daemon.worker.thread.join(30)
        assert not daemon.worker.thread.is_alive()
        states = {p.name: journal.get(str(p)).state for p in paths}
        assert set(states.values()) == {"done", "pending"}, states  # nothing left 'running'
        assert all(j.attempts == 0 for j in journal.all())
    finally:
        daemon.shutdown()


def test_part_file_then_rename_is_processed_once_under_final_name(tmp_path, tiny_model):
    d = Driven(daemon_config(tmp_path, tiny_model))
    try:
        part = tmp_path / "inbox" / "photo.png.part"
        make_image(part, fmt="PNG")
        d.step(1.0)
        d.step(1.0)  # long past the settle time: a .part file is never taken
        final = tmp_path / "inbox" / "photo.png"
        part.rename(final)
        d.heard(final)
        d.settle()
        assert d.state(final) == "done" and d.journal.get(str(part)) is None
        assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["photo.png", "photo.png.smolvlm.json"]
        assert d.daemon.engine.vision_passes == 1
    finally:
        d.stop()


def test_burst_of_500_files_is_processed_exactly_once_each(tmp_path, running):
    d = running()
    paths = []
    for i in range(500):
        paths.append(make_image(tmp_path / "inbox" / f"b{i:03d}.png", (16, 16), (i % 256, 0, 0), fmt="PNG"))
    d.wait_done(paths, timeout=240)
    time.sleep(0.5)
    assert d.daemon.engine.vision_passes == 500
    assert d.journal.counts()["done"] == 500
    assert all(j.attempts == 0 for j in d.journal.all())
    assert len(list((tmp_path / "inbox").glob("*.smolvlm.json"))) == 500


def test_files_dropped_while_stopped_are_processed_after_start(tmp_path, running):
    d = running()
    first = make_image(tmp_path / "inbox" / "first.png")
    d.wait_done([first])
    d.stop()
    later = [make_image(tmp_path / "inbox" / "sub" / f"later{i}.png", color=(i, 9, 9)) for i in range(3)]
    first.unlink()
    d2 = running()
    d2.wait_done(later)
    assert d2.state(first) == "gone"


@pytest.mark.smoke
def test_renamed_file_keeps_its_sidecars_without_a_model_run(tmp_path, running, tiny_model):
    d = running(daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]"))
    img = make_image(tmp_path / "inbox" / "before.png")
    d.wait_done([img])
    passes = d.daemon.engine.vision_passes
    hour = d.journal.done_since(time.time() - 3600)
    original = read_sidecar(img)
    after = tmp_path / "inbox" / "after.png"
    img.rename(after)
    d.wait_done([after])
    assert d.daemon.engine.vision_passes == passes
    assert d.journal.done_since(time.time() - 3600) == hour  # issue 27, 9: a rename neither adds nor loses work
    moved = read_sidecar(after)
    assert moved["tasks"] == original["tasks"] and moved["source"]["path"] == str(after)
    assert (tmp_path / "inbox" / "after.png.txt").read_text() == original["tasks"]["ocr"]["result"]
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [
        "after.png", "after.png.smolvlm.json", "after.png.txt"]


def test_polling_mode(tmp_path, running, tiny_model):
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("settle_seconds: 0.3", "settle_seconds: 0.3\n    polling: on\n"
                                           "    poll_interval: 0.2"))
    d = running(cfg)
    assert d.daemon.watches.armed[0].mode == "polling"
    img = make_image(tmp_path / "inbox" / "polled.png")
    d.wait_done([img])


def test_inotify_limit_falls_back_to_polling(tmp_path, running, monkeypatch):
    monkeypatch.setattr(watcher, "max_user_watches", lambda: 1)
    (tmp_path / "inbox" / "a" / "b").mkdir(parents=True)
    d = running()
    armed = d.daemon.watches.armed[0]
    assert armed.mode == "polling" and "max_user_watches=1" in armed.reason
    img = make_image(tmp_path / "inbox" / "a" / "b" / "deep.png")
    d.wait_done([img], timeout=30)


def test_inotify_enospc_at_start_falls_back_to_polling(tmp_path, running, monkeypatch):
    from inotify_simple import INotify

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(INotify, "add_watch", refuse)
    d = running()
    armed = d.daemon.watches.armed[0]
    assert armed.mode == "polling" and "inotify failed" in armed.reason


def test_poison_file_is_quarantined_while_others_complete(tmp_path, running, tiny_model, monkeypatch):
    write_trap_plugin(tmp_path, "poisontask", "picky", "poison.png",
                      'raise RuntimeError("this file always breaks the task")')
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = daemon_config(tmp_path, tiny_model, tasks="[picky]", extra="plugins: [poisontask]\n")
    d = running(cfg)
    poison = make_image(tmp_path / "inbox" / "poison.png")
    good = [make_image(tmp_path / "inbox" / f"good{i}.png") for i in range(3)]
    d.wait_done(good)
    wait_for(lambda: d.state(poison) == "quarantined", 30, what="quarantine")
    job = d.journal.get(str(poison))
    assert job.attempts == 3
    assert job.last_error == "picky: RuntimeError in picky.requests: this file always breaks the task"
    sys.modules.pop("poisontask", None)


def test_undecodable_file_fails_at_once_and_retry_requeues(tmp_path, running, run_cli):
    d = running()
    bad = tmp_path / "inbox" / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    wait_for(lambda: d.state(bad) == "failed", 20, what="failure")
    assert d.journal.get(str(bad)).attempts == 1
    make_image(bad, fmt="PNG")  # fixed (the new mtime also requeues it; retry does so explicitly)
    n = d.journal.requeue_failed(str(bad))
    assert n == 1
    d.wait_done([bad])


def test_second_daemon_on_the_same_db_refuses(tmp_path, running, tiny_model):
    d = running()
    with pytest.raises(JournalLocked, match="another smolvlm-watch daemon .* is using the state database"):
        Journal(d.daemon.config.state.db, exclusive=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "state.db").symlink_to(d.daemon.config.state.db)  # issue 25, 7: another spelling
    (tmp_path / "linked-state").symlink_to(d.daemon.config.state.db.parent)
    for spelling in (tmp_path / "elsewhere" / "state.db", tmp_path / "linked-state" / "journal.sqlite"):
        with pytest.raises(JournalLocked, match=f"is using the state database {d.daemon.config.state.db}"):
            Journal(spelling, exclusive=True)


def test_status_explain_backfill_retry_commands(tmp_path, running, run_cli, tiny_model):
    d = running()
    img = make_image(tmp_path / "inbox" / "one.png")
    bad = tmp_path / "inbox" / "bad.png"
    bad.write_bytes(b"junk")
    d.wait_done([img])
    wait_for(lambda: d.state(bad) == "failed", 20)
    cfg = tmp_path / "config.yaml"
    d.daemon.write_meta()
    code, out, _ = run_cli("status", "-c", cfg, "--json")
    status = json.loads(out)
    assert code == 0 and status["daemon_running"] is True and status["model_loaded"] is True
    assert status["queue"]["done"] == 1 and status["queue"]["failed"] == 1
    assert status["failures"][0]["path"] == str(bad) and "not a supported image" in status["failures"][0]["error"]
    assert status["watches"][0]["mode"] == "native"

    code, out, _ = run_cli("explain", "-c", cfg, img)
    assert "filter: accepted" in out and "journal: done" in out and "verdict: up to date; nothing to do" in out
    code, out, _ = run_cli("explain", "-c", cfg, tmp_path / "inbox" / "._one.png")
    assert "not input: hidden file" in out
    code, out, _ = run_cli("explain", "-c", cfg, tmp_path / "elsewhere.png")
    assert code == 1 and "outside every configured watch" in out

    d.stop()
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 2}", "max_new_tokens: 3}", 1))
    code, out, _ = run_cli("explain", "-c", cfg, img)
    assert "results are stale" in out
    code, out, _ = run_cli("backfill", "-c", cfg, "--stale")
    assert "queued 1 file(s)" in out
    code, out, _ = run_cli("retry", "-c", cfg, "--all")
    assert "re-queued 1 failed file(s)" in out
    journal = Journal(tmp_path / "state" / "journal.sqlite")
    assert journal.get(str(img)).state == "pending" and journal.get(str(bad)).state == "pending"
    journal.close()
    make_image(tmp_path / "inbox" / "new.png")
    code, out, _ = run_cli("backfill", "-c", cfg, "--missing")
    assert "queued 1 file(s)" in out


def test_kill_9_mid_run_then_restart_leaves_exactly_one_complete_sidecar_set(tmp_path, tiny_model):
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]")
    cfg.write_text(cfg.read_text().replace("caption: {max_new_tokens: 2}", "caption: {max_new_tokens: 40}"))
    images = [make_image(tmp_path / "inbox" / f"k{i:02d}.png", (64, 64), (i * 8, 50, 50)) for i in range(40)]
    db = tmp_path / "state" / "journal.sqlite"
    proc = spawn(cfg)
    try:
        wait_for(lambda: 3 <= sum(s == "done" for s in journal_states(db).values()), 60, what="some done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    states = journal_states(db)
    assert sum(s == "done" for s in states.values()) < len(images), "killed too late to test anything"
    d = InProcess(cfg)  # the restart: what the kill left is all it sees (no need for a third interpreter)
    try:
        d.wait_done(images, 120)
    finally:
        d.stop()
    names = sorted(p.name for p in (tmp_path / "inbox").iterdir())
    expected = sorted([p.name for p in images] + [f"{p.name}.smolvlm.json" for p in images]
                      + [f"{p.name}.txt" for p in images])
    assert names == expected  # no temp files, no duplicates
    for img in images:
        doc = read_sidecar(img)
        assert set(doc["tasks"]) == {"caption", "ocr"} and all("result" in t for t in doc["tasks"].values())
        assert (img.parent / f"{img.name}.txt").read_text() == doc["tasks"]["ocr"]["result"]


def _watches_recorded(db: Path) -> set[str]:
    """The watches the running daemon says it has armed (its record in the journal)."""
    from smolvlm_watch.daemon_record import DaemonRecord

    j = Journal(db, readonly=True)
    try:
        return {w.path for w in DaemonRecord.from_json(j.meta("daemon")).watches}
    finally:
        j.close()


def test_sighup_reload_valid_and_invalid_and_sigterm_exits_0(tmp_path, tiny_model):
    cfg = daemon_config(tmp_path, tiny_model)
    db = tmp_path / "state" / "journal.sqlite"
    proc = spawn(cfg)
    events = log_events(proc)
    try:
        first = make_image(tmp_path / "inbox" / "first.png")
        wait_for(lambda: journal_states(db).get(str(first)) == "done", 60, what="first done")
        # invalid: refused, the old config keeps running
        good_text = cfg.read_text()
        cfg.write_text(good_text.replace("tasks: [caption]", "tasks: [capton]"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload_refused" in names(events), 30, what="the reload refused")
        second = make_image(tmp_path / "inbox" / "second.png")
        wait_for(lambda: journal_states(db).get(str(second)) == "done", 30, what="second done")
        # valid: a new watch is armed
        (tmp_path / "more").mkdir()
        cfg.write_text(good_text.replace("state:", "  - {path: ./more, tasks: [caption], outputs: [json], "
                                                  "settle_seconds: 0.3}\nstate:"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: str(tmp_path / "more") in _watches_recorded(db), 30, what="the reload's new watch armed")
        third = make_image(tmp_path / "more" / "third.png")
        wait_for(lambda: journal_states(db).get(str(third)) == "done", 30, what="third done")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    wait_for(lambda: events and events[-1]["event"] == "stopped", 10, what="the last line read")
    assert proc.returncode == 0, names(events)
    refused = [e for e in events if e["event"] == "reload_refused"]
    assert refused and "watches[0].tasks[0]: unknown task 'capton'" in refused[0]["error"]
    assert any(e["event"] == "reloaded" for e in events)
    for e in events:
        if e["event"] == "job_done":
            assert e["path"] and e["job_id"]


def test_a_reload_that_moves_the_journal_is_refused_and_status_says_restart(tmp_path, tiny_model, run_cli):
    """Issue 25, 15: a state.db changed by a reload was silently ignored (files went on into the
    old journal). Now the reload is refused, saying so, and status says a restart is needed."""
    cfg = daemon_config(tmp_path, tiny_model)
    running_cfg = tmp_path / "running.yaml"
    running_cfg.write_text(cfg.read_text())
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        old = daemon.config.state.db
        cfg.write_text(cfg.read_text().replace("./state/journal.sqlite", "./other/journal.sqlite")
                       .replace("tasks: [caption]", "tasks: [ocr]"))
        daemon.reload()
        assert daemon.config.state.db == old and daemon.config.watches[0].tasks == ("caption",)  # nothing applied
        why = f"state.db changed from {old} to {tmp_path / 'other' / 'journal.sqlite'}: restart the daemon to use it"
        assert daemon.restart_needed == why
        code, out, _ = run_cli("status", "-c", running_cfg)  # what the running daemon wrote in its journal
        assert f"restart needed: {why}" in out.splitlines(), out
        cfg.write_text(cfg.read_text().replace("./other/journal.sqlite", "./state/journal.sqlite"))
        daemon.reload()
        assert daemon.restart_needed is None and daemon.config.watches[0].tasks == ("ocr",)
    finally:
        daemon.stop()
        daemon.shutdown()


def test_stability_tracker_timing(tmp_path):
    """Quiet for settle seconds, then one more look with the same size and mtime; changes without
    events restart the wait; vanished files are dropped; max_wait takes a file anyway."""
    tracker = watcher.StabilityTracker(settle=2.0, max_wait=10.0)
    f = tmp_path / "a.png"
    f.write_bytes(b"1")
    tracker.touch(f, now=0.0)
    assert tracker.due(now=1.0) == [] and tracker.due(now=2.1) == []
    assert tracker.due(now=2.3) == [(f, False)]
    tracker.touch(f, now=3.0)
    assert tracker.due(now=5.1) == []
    f.write_bytes(b"12")  # grew, but no event reached us
    assert tracker.due(now=5.3) == [] and tracker.due(now=7.2) == []  # the change restarts the wait
    assert tracker.due(now=7.4) == [(f, False)]
    g = tmp_path / "gone.png"
    g.write_bytes(b"x")
    tracker.touch(g, now=0.0)
    g.unlink()
    assert tracker.due(now=3.0) == [] and len(tracker) == 0
    h = tmp_path / "growing.png"
    h.write_bytes(b"x")
    tracker.touch(h, now=0.0)
    for t in range(1, 10):
        tracker.touch(h, now=float(t))
    assert tracker.due(now=10.0) == [(h, True)]  # still changing at max_wait: taken, flagged


def _inotify_watches() -> int:
    """Inotify watches this process holds, as the kernel reports them (/proc/self/fdinfo)."""
    total = 0
    for info in Path("/proc/self/fdinfo").iterdir():
        try:
            total += info.read_text().count("inotify wd:")
        except OSError:
            continue
    return total


def test_excluded_and_ignored_folders_get_no_inotify_watches(tmp_path, tiny_model):
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("settle_seconds: 0.3", "settle_seconds: 0.3\n    exclude: [private]"))
    inbox = tmp_path / "inbox"
    for i in range(15):
        (inbox / "private" / f"p{i}").mkdir(parents=True)
        (inbox / "@eaDir" / f"t{i}").mkdir(parents=True)
    (inbox / "2026" / "01").mkdir(parents=True)
    before = _inotify_watches()
    d = Driven(cfg)
    try:
        assert _inotify_watches() - before == 3  # inbox, 2026, 2026/01
        (inbox / "private" / "later").mkdir()
        (inbox / "2026" / "02").mkdir()
        new = make_image(inbox / "2026" / "02" / "x.png")
        d.heard(new)
        d.settle()
        assert d.state(new) == "done"
        assert _inotify_watches() - before == 4  # the new accepted folder only
        secret = make_image(inbox / "private" / "later" / "secret.png")
        after = make_image(inbox / "2026" / "after.png")
        d.heard(after)  # one inotify queue, in order: secret.png's event, had there been one, came first
        assert secret not in d.armed.tracker
        d.settle()
        assert d.state(after) == "done" and d.state(secret) is None
    finally:
        d.stop()


def test_inotify_exhausted_after_start_switches_the_watch_to_polling(tmp_path, running, monkeypatch):
    from inotify_simple import INotify

    original = INotify.add_watch

    def limited(self, path, mask):
        if "late" in os.fsdecode(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, mask)

    monkeypatch.setattr(INotify, "add_watch", limited)
    monkeypatch.setattr(daemon_module, "HEALTH_INTERVAL", 0.5)
    d = running()
    assert d.daemon.watches.armed[0].mode == "native"
    (tmp_path / "inbox" / "late").mkdir()
    img = make_image(tmp_path / "inbox" / "late" / "missed-by-inotify.png")
    d.wait_done([img], timeout=30)  # found by the new folder's scan, watch or no watch
    armed = d.daemon.watches.armed[0]
    wait_for(lambda: armed.mode == "polling", 10, what="the move to polling")
    assert armed.reason == "inotify failed: No space left on device"


@pytest.mark.smoke
def test_live_pickup_after_ready_at_the_root_and_in_a_new_folder(tmp_path, running):
    """What a user meets first: a file copied in after `ready` is processed within seconds,
    also in a folder made after the start (run on the newest versions too: `make test-latest`)."""
    d = running()
    assert d.daemon.watches.canary_failed is None and d.daemon.watches.armed[0].mode == "native"
    top = make_image(tmp_path / "inbox" / "after-ready.png")
    deep = make_image(tmp_path / "inbox" / "2026" / "12" / "new-folder.png", color=(1, 2, 3))
    d.wait_done([top, deep], timeout=20)  # the rescan is 300 s away: only live events get here
    assert d.daemon.reconciler.missed_total == 0


def test_a_deaf_observer_is_caught_by_the_rescan_and_the_watch_moves_to_polling(tmp_path, tiny_model, monkeypatch):
    from smolvlm_watch.metrics import routes

    cfg = daemon_config(tmp_path, tiny_model)
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    inbox = tmp_path / "inbox"
    try:
        armed = daemon.watches.armed[0]
        assert armed.mode == "native"
        heard = make_image(inbox / "heard.png")
        wait_for(lambda: heard in armed.tracker, 10, what="the live event")
        monkeypatch.setattr(watcher, "MISSED_SLACK", 0.0)
        monkeypatch.setattr(watcher._Handler, "on_any_event", lambda self, event: None)  # deaf from here on
        unseen = [make_image(inbox / f"unseen{i}.png", color=(i, 0, 0)) for i in range(3)]
        time.sleep(0.5)  # longer ago than settle_seconds (0.3)
        daemon.scan_all()
        assert armed.missed == 3 and daemon.reconciler.missed_total == 3  # not heard.png: its event came
        why = f"watch {inbox}: live events missed 3 file(s) that a rescan found (the watch moves to polling at 3)"
        assert daemon.supervisor.trouble() == why
        scrape = routes(daemon.metrics)
        assert scrape["/healthz"](None).status == 503
        assert b"smolvlm_watch_missed_events_total 3.0" in scrape["/metrics"](None).body
        assert all(daemon.journal.get(str(p)).state == "pending" for p in unseen)

        daemon.watches.healthy()
        assert (armed.mode, armed.reason) == ("polling", "live events missed 3 file(s) that rescans found")
        assert daemon.supervisor.trouble() is None and scrape["/healthz"](None).status == 200
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_silent_observer_at_start_is_caught_by_the_canary(tmp_path, tiny_model, monkeypatch):
    class Silent:
        def start(self): pass

        def stop(self): pass

        def join(self, timeout=None): pass

        def is_alive(self): return True

    monkeypatch.setattr(watcher, "native_observer", lambda *args: Silent())
    monkeypatch.setattr(watcher, "CANARY_SECONDS", 0.3)
    cfg = daemon_config(tmp_path, tiny_model)
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        armed = daemon.watches.armed[0]
        assert armed.mode == "polling"
        assert armed.reason == ("live events failed their test at start: the native observer reported no event "
                                f"within 0.3 s in a test folder ({tmp_path / 'state'})")
        assert not [p for p in (tmp_path / "state").iterdir() if p.name.startswith(".smolvlm-canary-")]
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_job_interrupted_again_and_again_ends_quarantined(tmp_path):
    """A file that kills (or wedges, then gets restarted by systemd) the daemon every time."""
    db = tmp_path / "j.sqlite"
    j = Journal(db, exclusive=True)
    j.enqueue(str(tmp_path / "killer.png"), str(tmp_path), 10, 1.0)
    for expected in ("pending", "pending", "quarantined"):
        assert j.lease(60) is not None  # the daemon takes it ... and dies
        j.close()
        j = Journal(db, exclusive=True)
        assert j.recover(max_attempts=3) == 1
        job = j.get(str(tmp_path / "killer.png"))
        assert job.state == expected
    assert job.attempts == 3 and job.last_error.startswith("interrupted")
    assert j.lease(60) is None
    j.close()


def test_only_the_file_that_kills_the_daemon_is_quarantined_not_the_files_in_flight_beside_it(tmp_path, tiny_model):
    """The files decoded ahead share a crash's blame once; after it, each interrupted file runs
    alone, so restarts quarantine the culprit and finish the others."""
    write_trap_plugin(tmp_path, "killertask", "killer", "poison.png", "import os; os._exit(3)")
    cfg = daemon_config(tmp_path, tiny_model, tasks="[killer]", extra="plugins: [killertask]\nruntime: {prefetch: 4}\n")
    names = ["a0.png", "a1.png", "a2.png", "poison.png", "z0.png", "z1.png", "z2.png"]
    for i, name in enumerate(names):
        make_image(tmp_path / "inbox" / name, (40, 40), (i * 30, 0, 0), fmt="PNG")
    db = tmp_path / "state" / "journal.sqlite"
    crashes = 0
    for _ in range(6):
        proc = spawn(cfg, {"PYTHONPATH": str(tmp_path)})
        try:
            wait_for(lambda proc=proc: proc.poll() is not None or all(
                s in ("done", "quarantined") for s in journal_states(db).values()) and len(journal_states(db)) == 7,
                60, what="a crash or every file settled")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        crashes += proc.returncode == 3
        if proc.returncode != 3:
            break
    j = Journal(db)
    jobs = {Path(job.path).name: job for job in j.all()}
    j.close()
    assert crashes == 3  # max_attempts 3: the poison file is blamed at every crash ...
    assert jobs["poison.png"].state == "quarantined" and jobs["poison.png"].attempts == 3
    for name in set(names) - {"poison.png"}:  # ... the others at most once, for the first crash
        assert jobs[name].state == "done" and jobs[name].attempts <= 1, (name, jobs[name])
    assert any(jobs[n].attempts == 1 for n in names if n != "poison.png")  # some were in flight then


def test_a_corrupt_state_database_is_a_clear_error(tmp_path, tiny_model, run_cli):
    cfg = daemon_config(tmp_path, tiny_model)
    db = tmp_path / "state" / "journal.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not sqlite" * 100)
    code, _, err = run_cli("run", "-c", cfg)
    assert code == 1
    assert f"the state database {db} cannot be used" in err and "move it away" in err
    code, _, err = run_cli("status", "-c", cfg)
    assert code == 1 and "cannot be used" in err


def test_an_unwritable_state_folder_is_a_clear_error(tmp_path, tiny_model, run_cli):
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("db: ./state/journal.sqlite", "db: /proc/smolvlm-no/journal.sqlite"))
    code, _, err = run_cli("run", "-c", cfg)
    assert code == 1 and "cannot create the state folder /proc/smolvlm-no" in err and "state.db" in err


def test_a_missing_watch_folder_is_shown_while_it_lasts_and_the_watchdog_still_pings(tmp_path, tiny_model,
                                                                                      monkeypatch, run_cli):
    """Issue 27, 7: `run` with its only watch folder missing said `ready` and watched nothing
    (/healthz 200). It may be a share not mounted yet: /healthz, status and the metrics say so
    while it lasts; the systemd watchdog is still fed (a restart would not mount it)."""
    from smolvlm_watch.metrics import routes

    pings: list[str] = []
    monkeypatch.setattr(daemon_module, "notify", pings.append)
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("path: ./inbox", "path: ./nas"))
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        daemon.supervisor.interval = 1.0
        daemon.tick(time.monotonic() + 10)
        why = f"watch {tmp_path / 'nas'} unavailable: folder does not exist or is not mounted"
        assert daemon.supervisor.trouble() == why
        scrape = routes(daemon.metrics)
        assert scrape["/healthz"](None).body.decode() == f"unhealthy: {why}\n"
        assert f'smolvlm_watch_watch_mode{{mode="unavailable",watch="{tmp_path / "nas"}"}} 1.0' in (
            scrape["/metrics"](None).body.decode())
        assert "WATCHDOG=1" in pings
        (tmp_path / "nas").mkdir()  # the share is mounted
        daemon.tick(time.monotonic() + 20)
        assert daemon.supervisor.trouble() is None and daemon.watches.armed[0].mode == "native"
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_live_file_never_waits_for_a_rescan(tmp_path, tiny_model, monkeypatch):
    """Issue 28, 2: a file dropped during a 21 s rescan of 200,000 files waited 24.5 s: the rescan
    ran in the supervisor's own loop. It runs beside it now."""
    from smolvlm_watch.reconcile import Reconciler

    real, started, walked, calls = Reconciler.scan, threading.Event(), threading.Event(), []

    def slow(self, armed):
        calls.append(1)
        if len(calls) > 1:  # every rescan after the startup scan: a big library's walk, until the test ends it
            started.set()
            walked.wait(60)
        return real(self, armed)

    monkeypatch.setattr(Reconciler, "scan", slow)
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("state: {", "state: {rescan_interval: 1, "))
    d = InProcess(cfg)
    try:
        assert started.wait(10)
        live = make_image(tmp_path / "inbox" / "live.png")
        d.wait_done([live], timeout=30)
        assert d.daemon.supervisor.rescanning()  # done while the walk still ran
    finally:
        walked.set()
        d.stop()


def test_rescan_subpath_asks_the_running_daemon(tmp_path, tiny_model, run_cli, monkeypatch):
    """Issue 28, 2: `smolvlm-watch rescan [SUBPATH]` asks for a rescan now; one of a folder
    touches nothing outside it."""
    cfg = daemon_config(tmp_path, tiny_model)
    inbox = tmp_path / "inbox"
    elsewhere = make_image(inbox / "elsewhere.png", color=(5, 5, 5))
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    try:
        monkeypatch.setattr(watcher._Handler, "on_any_event", lambda self, event: None)  # only a rescan can see
        found = make_image(inbox / "2026" / "found.png")
        code, out, _ = run_cli("rescan", "-c", cfg, inbox / "2026")
        assert code == 0 and out.strip() == f"rescan of {inbox / '2026'} asked for; the daemon takes it within seconds"
        elsewhere.unlink()  # outside the folder asked for: not looked at, so not marked gone yet
        daemon.tick(time.monotonic() + 60)
        wait_for(lambda: not daemon.supervisor.rescanning() and daemon.journal.get(str(found)) is not None, 10,
                 what="the asked rescan")
        assert daemon.journal.get(str(found)).state == "pending"
        assert daemon.journal.get(str(elsewhere)).state != "gone"
        code, _, err = run_cli("rescan", "-c", cfg, tmp_path / "not-watched")
        assert code == 1 and "lies in no configured watch" in err
    finally:
        daemon.stop()
        daemon.shutdown()


def _age(*folders: Path) -> None:
    """Folders last changed a minute ago, as in a library that is not being written to."""
    old = time.time() - 60
    for folder in folders:
        os.utime(folder, (old, old))


def test_a_rescan_takes_unchanged_folders_from_memory_and_lists_changed_ones(tmp_path, tiny_model, monkeypatch):
    """Issue 28, 2: a rescan lists and stats only folders whose identity or mtime moved; an
    addition, a deletion, a deleted sidecar and a folder swapped in under the same name are all
    seen; a file rewritten in place with no live event waits for the full walk."""
    inbox = tmp_path / "inbox"
    albums = [inbox / "2019", inbox / "2020", inbox / "spare"]
    photos = {a.name: make_image(a / "p.png", color=(i, 7, 7)) for i, a in enumerate(albums)}
    d = Driven(daemon_config(tmp_path, tiny_model))
    try:
        assert d.step() == 3
        _age(inbox, *albums)
        d.rescan()  # lists everything once more (the folders were fresh at the first look) and keeps it
        memo = d.armed.memo
        assert memo is not None and memo.recalled == set()
        monkeypatch.setattr(watcher._Handler, "on_any_event", lambda self, event: None)  # deaf: only rescans see
        listed, real_scandir = [], os.scandir
        monkeypatch.setattr(os, "scandir", lambda path=".": listed.append(Path(path)) or real_scandir(path))
        d.rescan()
        assert memo.recalled == {str(inbox), *map(str, albums)}
        assert [p for p in listed if p in albums or p == inbox] == []  # not one folder listed, so no file stat'ed
        monkeypatch.setattr(os, "scandir", real_scandir)

        added = make_image(albums[1] / "new.png", color=(1, 99, 1))
        (albums[0] / "p.png.smolvlm.json").unlink()  # a person deleted a sidecar
        swapped = make_image(tmp_path / "elsewhere" / "q.png", color=(5, 5, 99))
        _age(swapped.parent)
        albums[2].rename(tmp_path / "spare.old")
        swapped.parent.rename(albums[2])  # another folder under the old name, with its own old mtime
        d.rescan()
        assert memo.recalled == set()  # the top folder changed too: the rename
        assert d.state(added) == "done" and d.state(albums[2] / "q.png") == "done"
        assert d.state(photos["spare"]) == "gone" and (albums[0] / "p.png.smolvlm.json").exists()

        _age(inbox, *albums)
        d.rescan()  # kept again
        edited = photos["2020"]
        before = albums[1].stat().st_mtime_ns
        make_image(edited, color=(250, 250, 0))  # rewritten in place: the folder does not change
        assert albums[1].stat().st_mtime_ns == before
        passes = d.daemon.engine.vision_passes
        empty = inbox / "emptied"
        empty.mkdir()
        _age(empty, inbox)
        d.rescan()
        empty.rmdir()  # a folder that goes: its listing stays in memory until the full walk
        while memo.rescans % watcher.FULL_WALK_EVERY != watcher.FULL_WALK_EVERY - 1:
            d.rescan()
            assert str(albums[1]) in memo.recalled and d.daemon.engine.vision_passes == passes
        assert str(empty) in memo.folders
        d.rescan()  # the full walk
        assert memo.recalled == set() and d.daemon.engine.vision_passes == passes + 1
        assert str(empty) not in memo.folders
        assert read_sidecar(edited)["source"]["sha256"] == d.journal.get(str(edited)).sha256
    finally:
        d.stop()


def test_quiet_rescans_stretch_their_wait_to_an_hour_and_one_that_finds_files_resets_it(tmp_path, tiny_model,
                                                                                         monkeypatch):
    """Issue 28, 2: the rescan's pace. ``state.rescan_interval`` is the first and shortest wait;
    each rescan that queues nothing doubles it, up to an hour; one that finds a file no event
    reported goes back to the configured interval; a watch on polling never stretches it."""
    from smolvlm_watch.reconcile import Reconciler

    scans, real = [], Reconciler.scan
    monkeypatch.setattr(Reconciler, "scan", lambda self, armed, under=None: scans.append(1) or real(self, armed, under))
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("state: {", "state: {rescan_interval: 600, "))
    d = Driven(cfg)
    try:
        pace = d.daemon.supervisor.pace
        assert len(scans) == 1  # the startup scan
        d.step(599)
        assert len(scans) == 1
        waits = []
        for _ in range(5):
            d.rescan()
            waits.append(pace.wait(600))
        assert len(scans) == 6 and waits == [1200, 2400, 3600, 3600, 3600]
        d.step(3599)
        assert len(scans) == 6  # not before the hour

        monkeypatch.setattr(watcher._Handler, "on_any_event", lambda self, event: None)  # deaf: only rescans see
        unseen = make_image(tmp_path / "inbox" / "unseen.png")
        assert d.step(1) == 1 and d.state(unseen) == "done"
        assert len(scans) == 7 and pace.wait(600) == 600
    finally:
        d.stop()

    cfg.write_text(cfg.read_text().replace("poll_interval: 0.3", "poll_interval: 0.3\n    polling: on"))
    d = Driven(cfg)
    try:
        assert d.armed.mode == "polling"
        d.rescan()
        d.rescan()
        assert d.daemon.supervisor.pace.wait(600) == 600
    finally:
        d.stop()


def test_a_rescan_that_outlives_the_stop_ends_quietly(tmp_path, tiny_model, monkeypatch):
    """Shutdown waits ``RESCAN_STOP_GRACE_SECONDS`` for a rescan still walking, then closes the
    journal under it: the walk then fails, and that is the stop, not an unwritable journal (it
    logged `journal_unwritable` at error level on every slow stop)."""
    from structlog.testing import capture_logs

    from smolvlm_watch.reconcile import Reconciler

    go, real = threading.Event(), Reconciler.scan

    def held(self, armed, under=None):
        go.wait(10)
        return real(self, armed, under)

    cfg = daemon_config(tmp_path, tiny_model)
    d = Driven(cfg)
    monkeypatch.setattr(Reconciler, "scan", held)
    monkeypatch.setattr(daemon_module, "RESCAN_STOP_GRACE_SECONDS", 0.1)
    supervisor = d.daemon.supervisor
    supervisor._start_rescan(paced=True)
    with capture_logs() as logs:
        d.daemon.stop()
        assert d.stop()  # the grace passed with the walk still held
        go.set()
        assert supervisor.wait_rescan(10)
    assert [e for e in logs if e["log_level"] == "error"] == [] and d.daemon.health.problem is None


def test_a_model_that_cannot_load_at_its_first_file_fails_the_files_with_its_own_message(tmp_path, tiny_model):
    """With ``model.preload: false`` the model loads when the first file needs it. A model that
    cannot load is not the files' bug: each taken file records the load's own message (retried
    with back-off), never "internal error: ModelLoadError" and a traceback per file."""
    empty = tmp_path / "no-model"
    empty.mkdir()
    cfg = daemon_config(tmp_path, empty)
    cfg.write_text(cfg.read_text().replace("threads: 1}", "threads: 1, preload: false}"))
    img = make_image(tmp_path / "inbox" / "a.png")
    with structlog.testing.capture_logs() as logged:
        d = Driven(cfg)
        try:
            d.step()  # the startup scan queued the file; this tick runs it
            job = d.journal.get(str(img))
        finally:
            d.daemon.shutdown()
    assert job is not None and job.state in ("pending", "failed"), job
    assert job.last_error.startswith(f"cannot load model '{empty}': the folder has no loadable model"), job.last_error
    assert [e["event"] for e in logged if e["log_level"] == "error"] == ["model_load_failed"]
