"""Resource faults: a full disk under the sidecars, a model that runs out of memory, a journal that
cannot be written. Nothing is lost or half-written, and everything completes once the resource
is back (issue 20)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import InProcess, daemon_config, journal_states, log_events, make_image, names, spawn, wait_for
from smolvlm_watch.runtime import Runtime
from smolvlm_watch.atomic import TEMP_PREFIX
from smolvlm_watch.sidecar import PENDING, sha256_bytes


def _tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


def _fill(folder: Path, leave: int) -> Path:
    """A filler file taking all the space but ``leave`` bytes."""
    filler = folder / ".filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    with open(filler, "r+b") as f:
        f.truncate(max(0, filler.stat().st_size - leave))
    return filler


def _consistent(img: Path) -> bool:
    """No half of a set: a sidecar that exists is complete, records what is on disk, and
    describes this content."""
    sidecar = img.with_name(img.name + ".smolvlm.json")
    if not sidecar.exists():
        return True
    doc = json.loads(sidecar.read_text(encoding="utf-8"))
    if PENDING in doc:
        return True  # an unfinished set is marked as such, and redone
    return doc["source"]["sha256"] == sha256_bytes(img.read_bytes()) and all(
        sha256_bytes((img.parent / n).read_bytes()) == h for n, h in doc["outputs"].items())


def test_a_full_disk_under_the_sidecars_loses_nothing_and_completes_when_freed(tmp_path, tiny_model):
    share = tmp_path / "inbox"
    _tmpfs(share, "512k")
    try:
        cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]")
        cfg.write_text(cfg.read_text().replace("caption: {max_new_tokens: 2}", "caption: {max_new_tokens: 40}"))
        images = [make_image(share / f"d{i}.png", (30, 30), (i * 30, 0, 0)) for i in range(8)]
        filler = _fill(share, 3 * 4096)
        d = InProcess(cfg)
        try:
            wait_for(lambda: any((j := d.journal.get(str(p))) and j.last_error and "No space left" in j.last_error
                                 for p in images), 60, what="a write refused for want of space")
            failed = [d.journal.get(str(p)) for p in images]
            error = next(j.last_error for j in failed if j.last_error and "No space left" in j.last_error)
            assert error.startswith("[Errno 28] cannot write " + str(share)), error  # names the file
            assert all(_consistent(p) for p in images)
            filler.unlink()  # room again: the retries complete
            d.wait_done(images, timeout=90)
        finally:
            d.stop()
        assert all(_consistent(p) for p in images)
        assert not [p.name for p in share.iterdir() if p.name.startswith(TEMP_PREFIX)]
    finally:
        subprocess.run(["umount", str(share)], capture_output=True)


def test_a_model_out_of_memory_splits_the_batch_and_completes(tmp_path, tiny_model, run_cli, write_config,
                                                              monkeypatch):
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\nruntime: {{max_batch: 4}}\n"
                       "watches:\n  - {path: ./inbox, tasks: [caption], outputs: [json]}\n")
    images = [make_image(tmp_path / "inbox" / f"m{i}.png", color=(i * 50, 9, 9)) for i in range(4)]
    sizes: list[int] = []
    real = Runtime._generate

    def short_of_memory(self, batch, features):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch, features)

    monkeypatch.setattr(Runtime, "_generate", short_of_memory)
    code, out, _ = run_cli("process", *images, "-c", cfg, "--json")
    assert code == 0 and sorted(json.loads(out)["done"]) == sorted(map(str, images)), out
    assert max(sizes) > 1 and sizes.count(1) >= 4, sizes  # the batch failed, its requests then ran alone
    monkeypatch.setattr(Runtime, "_generate", real)
    code, out, _ = run_cli("process", images[0], "-c", cfg, "--force", "--json")
    assert code == 0  # the same answer as an unconstrained run, not an error recorded as a result


def test_a_journal_that_cannot_be_written_stops_nothing_and_catches_up(tmp_path, tiny_model):
    state = tmp_path / "state"
    _tmpfs(state, "1m")
    try:
        cfg = daemon_config(tmp_path, tiny_model)
        cfg.write_text(cfg.read_text().replace("state: {", "state: {lease_seconds: 1, "))
        proc = spawn(cfg)
        events = log_events(proc)
        db = state / "journal.sqlite"
        try:
            first = make_image(tmp_path / "inbox" / "first.png")

            def done(path: Path) -> bool:
                return journal_states(db).get(str(path)) == "done"

            wait_for(lambda: done(first), 60, what="first done")
            filler = _fill(state, 0)  # the state disk fills up
            during = [make_image(tmp_path / "inbox" / f"during{i}.png", color=(i, 99, 9)) for i in range(3)]
            wait_for(lambda: "journal_unwritable" in names(events), 60, what="a journal write refused")
            time.sleep(2)
            assert proc.poll() is None, "the daemon died with its journal"
            filler.unlink()
            wait_for(lambda: all(done(p) for p in during), 60, what="caught up once the journal took writes")
            wait_for(lambda: "journal_writable_again" in names(events), 30, what="the journal back")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        assert proc.returncode == 0, names(events)[-20:]
    finally:
        subprocess.run(["umount", str(state)], capture_output=True)
