"""The daemon does not stop: a Latin-1 file name, a FIFO swapped in, a reload to a model that
cannot load, a stop during a long job, a 4 GiB file of zeros, a TIFF with a bomb of a page
(issue 20, defects 4-9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image
from structlog.testing import capture_logs

from helpers import Driven, InProcess, daemon_config, journal_states, make_image, read_sidecar, spawn, wait_for
from zygote import cli_run
from smolvlm_watch import daemon as daemon_module
from smolvlm_watch.journal import Journal


def test_a_file_name_that_is_not_utf8_is_processed_and_reported(tmp_path, tiny_model, run_cli):
    """Defect 4: a name with Latin-1 bytes killed the daemon writing it to SQLite, and it could
    not start again while the file existed."""
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]")
    raw = os.fsencode(tmp_path / "inbox") + b"/caf\xe9 \xff.png"
    name = Path(os.fsdecode(raw))
    make_image(name)
    d = InProcess(cfg)
    try:
        d.wait_done([name])
        good = make_image(tmp_path / "inbox" / "after.png")  # the daemon lives on
        d.wait_done([good])
    finally:
        d.stop()
    sidecar = Path(os.fsdecode(raw + b".smolvlm.json"))
    text = sidecar.read_bytes().decode("utf-8")  # valid UTF-8 JSON ...
    assert 'caf\\udce9 \\udcff.png"' in text  # ... with the undecodable bytes as escapes
    assert json.loads(text)["source"]["path"] == str(name)  # that read back to the very name
    assert Path(os.fsdecode(raw + b".txt")).exists()
    code, out, _ = run_cli("status", "-c", cfg, "--json")
    assert code == 0 and json.loads(out)["queue"]["done"] == 2
    code, out, _ = run_cli("explain", "-c", cfg, name)
    assert code == 0 and "caf\\xe9 \\xff.png" in out and "verdict: up to date" in out
    d2 = InProcess(cfg)  # and it starts again with that file present
    try:
        assert d2.state(name) == "done"
    finally:
        d2.stop()


def test_a_fifo_swapped_in_for_a_queued_file_is_a_recorded_error_and_sigterm_exits(tmp_path, tiny_model):
    """Defect 5: the worker blocked in open() on the FIFO forever, and SIGTERM logged `stopped`
    but the process never exited."""
    cfg = daemon_config(tmp_path, tiny_model)
    fifo = tmp_path / "inbox" / "queued.png"
    db = tmp_path / "state" / "journal.sqlite"
    journal = Journal(db)
    journal.enqueue(str(fifo), str(tmp_path / "inbox"), 1234, 1.0)  # queued as a file ...
    journal.close()
    os.mkfifo(fifo)  # ... and a FIFO by the time the worker reaches it
    proc = spawn(cfg)
    try:
        wait_for(lambda: journal_states(db).get(str(fifo)) == "failed", 60, what="the FIFO's job failed")
        after = make_image(tmp_path / "inbox" / "after.png")
        wait_for(lambda: journal_states(db).get(str(after)) == "done", 30, what="the next file done")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
    j = Journal(db, readonly=True)
    assert j.get(str(fifo)).last_error == "not a regular file (a FIFO)"
    j.close()


def test_a_stall_outside_a_batch_stops_the_watchdog(tmp_path, tiny_model, monkeypatch):
    """Defect 5, second half: the watchdog rule keyed on the current batch, so a worker stuck
    before its batch (hashing a file on a hung share) still earned WATCHDOG=1."""
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("max_attempts: 3}", "max_attempts: 3, item_timeout: 1}"))
    real, share_back = daemon_module.sha256_file, threading.Event()

    def hung_share(path):
        share_back.wait(30)
        return real(path)

    monkeypatch.setattr(daemon_module, "sha256_file", hung_share)
    make_image(tmp_path / "inbox" / "slow.png")
    d = Driven(cfg)
    worker = threading.Thread(target=d.daemon.worker.tick)
    worker.start()
    try:
        wait_for(lambda: d.daemon.worker.heartbeat.busy_since is not None, 10, what="the worker took the job")
        assert d.daemon.worker.healthy(1.0)
        d.clock.now += 1.5
        assert not d.daemon.worker.healthy(1.0)  # no batch yet, and still overdue
        assert d.daemon.supervisor.trouble() == "a job has run longer than state.item_timeout (1 s)"
    finally:
        share_back.set()
        worker.join(30)
        d.stop()


def test_sighup_to_a_model_that_cannot_load_keeps_the_old_config(tmp_path, tiny_model):
    """Defect 6: the watches were stopped before the new model was loaded; its load error was
    uncaught and the daemon exited 1, though README promises the old config keeps running."""
    cfg = daemon_config(tmp_path, tiny_model)
    first = make_image(tmp_path / "inbox" / "first.png")
    d = Driven(cfg)
    try:
        assert d.step() == 1 and d.state(first) == "done"
        engine = d.daemon.engine
        (tmp_path / "empty-model").mkdir()
        cfg.write_text(cfg.read_text().replace(str(tiny_model), str(tmp_path / "empty-model")))
        d.daemon.reload_requested.set()  # what SIGHUP does
        with capture_logs() as logs:
            d.step()
        refused = [e for e in logs if e["event"] == "reload_refused"]
        assert refused and "cannot load model" in refused[0]["error"] and "empty-model" in refused[0]["error"]
        assert d.daemon.engine is engine and d.daemon.config.model.path == tiny_model
        second = make_image(tmp_path / "inbox" / "second.png")
        d.heard(second)
        d.settle()
        assert d.state(second) == "done"  # with the old model
    finally:
        d.stop()


def test_sigterm_during_a_long_job_exits_0_and_gives_the_job_back(tmp_path, tiny_model):
    """Defect 7: a job running past the stop grace ended in `terminate called without an active
    exception` (SIGABRT, exit -6). Now the model is cancelled at its next token, the job goes
    back to pending with no attempt counted, and the exit is 0."""
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text()
                   .replace("caption: {max_new_tokens: 2}",
                            "caption: {max_new_tokens: 8000, options: {min_new_tokens: 8000, loop_guard: false}}")
                   .replace("max_attempts: 3}", "max_attempts: 3, stop_grace_seconds: 1}"))
    db = tmp_path / "state" / "journal.sqlite"
    proc = spawn(cfg)
    try:
        long = make_image(tmp_path / "inbox" / "long.png")
        wait_for(lambda: journal_states(db).get(str(long)) == "running", 60, what="the long job running")
        time.sleep(1.0)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert took < 15, took  # 8000 tokens take ~40 s here: it did not wait for them
    assert '"event": "cancelling"' in out and '"event": "stopped"' in out
    j = Journal(db, readonly=True)
    job = j.get(str(long))
    j.close()
    assert job.state == "pending" and job.attempts == 0
    assert not (tmp_path / "inbox" / "long.png.smolvlm.json").exists()  # no cut-short answer recorded


_PEAK = """
import json, resource, sys
from smolvlm_watch.cli import main
code = main(["process", *sys.argv[1:], "--json"])
print(json.dumps({"code": code, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_a_4_gib_file_of_zeros_is_refused_after_its_head(tmp_path, tiny_model):
    """Defect 8: the whole file was read before its type was checked (RSS +4 GB), and a file of
    exactly media.max_bytes passed the limit."""
    zeros = tmp_path / "zeros.jpg"
    with open(zeros, "wb") as f:
        f.truncate(4 * 1024**3)  # sparse: 4 GiB that take no disk
    magic = tmp_path / "magic.jpg"
    with open(magic, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(4 * 1024**3 - 1)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {{path: {tiny_model}, threads: 1}}\nmedia: {{max_bytes: 5000000000}}\n")
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(zeros), str(magic), "-c", str(cfg), "--task", "caption"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout.splitlines()[0])
    peak = json.loads(proc.stdout.splitlines()[-1])["peak_mb"]
    errors = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert errors["zeros.jpg"].startswith("not a supported image or video, nor a PDF (content starts with b'\\x00")
    assert errors["magic.jpg"].startswith("corrupt or truncated image")
    assert peak < 1500, peak  # the model and torch; not 4 GB of zeros
    exact = make_image(tmp_path / "exact.png")
    limit = exact.stat().st_size
    cfg.write_text(f"model: {{path: {tiny_model}, threads: 1}}\nmedia: {{max_bytes: {limit}}}\n")
    proc = cli_run(["process", str(exact), "-c", str(cfg), "--task", "caption", "--json"], tmp_path, timeout=300)
    assert json.loads(proc.stdout)["failed"][0]["error"] == (
        f"file is {limit} bytes, at or over the media.max_bytes limit of {limit}")


def _tiff_with_a_bomb_page(path: Path) -> Path:
    pages = [Image.new("L", (64, 48), 200), Image.new("1", (15000, 15000), 1), Image.new("L", (64, 48), 90)]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    return path


def test_a_tiff_with_a_bomb_page_fails_alone_and_once(tmp_path, tiny_model):
    """Defect 9: Pillow's DecompressionBombError escaped the document code; the TIFF was
    retried as an internal error until quarantined, and every file batched with it was charged
    an attempt. (Pillow's own guard is off now: document.max_page_pixels refuses the page.)"""
    cfg = daemon_config(tmp_path, tiny_model, tasks="[ocr]", extra="runtime: {prefetch: 4}\n")
    inbox = tmp_path / "inbox"
    tiff = _tiff_with_a_bomb_page(inbox / "scan.tif")
    good = [make_image(inbox / f"good{i}.png", color=(i, 9, 9)) for i in range(3)]
    d = Driven(cfg)
    try:
        assert d.step() == 4
        assert {d.state(p) for p in good} == {"done"} and d.state(tiff) == "failed"
        d.rescan()  # nothing retries it
        job = d.journal.get(str(tiff))
        assert job.attempts == 1
        assert job.last_error == ("page 2: 15000x15000 = 225000000 pixels, over the document.max_page_pixels "
                                  "limit of 60000000 (raise it in the config if this is intended)"), job.last_error
        assert all(d.journal.get(str(p)).attempts == 0 for p in good)
    finally:
        d.stop()
    pages = read_sidecar(tiff)["pages"]
    assert [("error" in p) for p in pages] == [False, True, False]  # the other pages are read
    d = Driven(cfg)
    try:
        d.journal.requeue_failed(str(tiff))
        assert d.step() == 1
        assert d.state(tiff) == "failed" and d.journal.get(str(tiff)).attempts == 1
        assert "over the document.max_page_pixels limit of 60000000" in d.journal.get(str(tiff)).last_error
    finally:
        d.stop()
