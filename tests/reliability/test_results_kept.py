"""Results are never lost: an edited photo, a kill between two renames, a disk with room for a
small file but not the next, files restored with their old size and mtime, temp files of an
interrupted write (issue 20, defects 1-3)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import InProcess, cli_killed_at_rename, daemon_config, make_image, read_sidecar, wait_for
from zygote import cli_run, completed
from smolvlm_watch import atomic, daemon as daemon_module
from smolvlm_watch.atomic import TEMP_PREFIX
from smolvlm_watch.sidecar import PENDING, sha256_bytes

TXT_CONFIG = """\
model: {{path: {model}, threads: 1}}
tasks:
  caption: {{max_new_tokens: 3}}
  ocr: {{max_new_tokens: 3, image_splitting: false}}
  tags: {{max_new_tokens: 3}}
watches:
  - path: ./inbox
    tasks: [caption, ocr, tags]
    outputs: [json, txt, xmp]
    caption_txt: true
"""


def _config(tmp_path: Path, tiny_model: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(TXT_CONFIG.format(model=tiny_model))
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return cfg


def _process(cfg: Path, *paths: Path, kill_at_rename: int | None = None) -> subprocess.CompletedProcess:
    """`smolvlm-watch process` as a real process (a child of the warmed interpreter); with
    ``kill_at_rename`` strace kills it with SIGKILL as it enters its Nth rename (that rename does
    not happen)."""
    args = ["process", *map(str, paths), "-c", str(cfg), "--json"]
    if kill_at_rename is None:
        return cli_run(args, cfg.parent, timeout=300)
    return completed(cli_killed_at_rename(args, cfg.parent, kill_at_rename, stderr_apart=True), args, 300)


def _complete_set(img: Path) -> dict:
    """The file's sidecar set is complete and consistent: JSON of this content, every output it
    records holding exactly the recorded bytes, nothing unfinished, no temp file."""
    doc = read_sidecar(img)
    assert PENDING not in doc, doc.get(PENDING)
    assert doc["source"]["sha256"] == sha256_bytes(img.read_bytes())
    for name, digest in doc["outputs"].items():
        assert sha256_bytes((img.parent / name).read_bytes()) == digest, name
    assert not [p.name for p in img.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    return doc


def test_an_edited_photo_keeps_its_text_outputs_ours(tmp_path, tiny_model, run_cli):
    """Defect 1a: the content hash changed, so the earlier sidecar's outputs were dropped before
    writing and our own photo.txt / photo.jpg.txt were refused as foreign, for good."""
    cfg = _config(tmp_path, tiny_model)
    img = make_image(tmp_path / "inbox" / "photo.jpg", (80, 60), (10, 200, 10), fmt="JPEG")
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out
    first = _complete_set(img)
    assert set(first["outputs"]) == {"photo.jpg.txt", "photo.txt", "photo.jpg.xmp"}
    make_image(img, (80, 60), (200, 10, 10), fmt="JPEG")  # edited in a photo editor
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0 and json.loads(out)["done"] == [str(img)], out
    second = _complete_set(img)
    assert second["source"]["sha256"] != first["source"]["sha256"]
    assert (tmp_path / "inbox" / "photo.txt").read_text() == second["tasks"]["caption"]["result"]


@pytest.mark.parametrize("kill_at", [3, 5])
def test_a_kill_at_any_rename_of_a_write_set_loses_nothing(tmp_path, tiny_model, kill_at, run_cli):
    """Defect 1b: killed between the .txt rename and the JSON rename, the next run found a .txt
    the JSON did not record and failed the file for good. Renames of one first write set here:
    the intent JSON, photo.jpg.txt, photo.txt, photo.jpg.xmp, the final JSON. (The killed run is
    a process of its own; the run after it, in this one, reads only what the kill left.)"""
    cfg = _config(tmp_path, tiny_model)
    img = make_image(tmp_path / "inbox" / "photo.jpg", (80, 60), (10, 10, 200), fmt="JPEG")
    killed = _process(cfg, img, kill_at_rename=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    code, out, err = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out + err[-2000:]
    assert json.loads(out.splitlines()[-1])["done"] == [str(img)]
    doc = _complete_set(img)
    assert set(doc["outputs"]) == {"photo.jpg.txt", "photo.txt", "photo.jpg.xmp"}
    names = sorted(p.name for p in img.parent.iterdir())
    assert names == ["photo.jpg", "photo.jpg.smolvlm.json", "photo.jpg.txt", "photo.jpg.xmp", "photo.txt"]


def test_a_kill_mid_rewrite_of_an_existing_set_loses_nothing(tmp_path, tiny_model, run_cli):
    """The same on a re-run over an existing set (a new prompt): the old and new bytes of every
    output are both recognised as ours until the set is done."""
    cfg = _config(tmp_path, tiny_model)
    img = make_image(tmp_path / "inbox" / "photo.jpg", (80, 60), (100, 10, 200), fmt="JPEG")
    assert _process(cfg, img).returncode == 0  # its own process: this one sweeps the folder when it first writes there
    cfg.write_text(cfg.read_text().replace("caption: {max_new_tokens: 3}", "caption: {max_new_tokens: 4}")
                   .replace("ocr: {max_new_tokens: 3", "ocr: {max_new_tokens: 5"))
    killed = _process(cfg, img, kill_at_rename=3)
    assert killed.returncode == -9
    assert PENDING in read_sidecar(img)
    code, out, err = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out + err[-2000:]
    doc = _complete_set(img)
    assert doc["tasks"]["caption"]["generation"]["max_new_tokens"] == 4


def test_a_disk_with_room_for_the_txt_but_not_the_json(tmp_path, tiny_model, run_cli, monkeypatch):
    """Defect 1c: the .txt landed, the JSON did not (ENOSPC); the next run, with room again, must
    take the .txt as ours. The error names the file it could not write."""
    cfg = _config(tmp_path, tiny_model)
    img = make_image(tmp_path / "inbox" / "photo.jpg", (80, 60), (10, 200, 200), fmt="JPEG")
    real = atomic._atomic_write

    def full_for_the_final_json(path, data, mode):
        if path.name.endswith(".smolvlm.json") and PENDING.encode() not in data:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, mode)

    monkeypatch.setattr(atomic, "_atomic_write", full_for_the_final_json)
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    failed = json.loads(out)["failed"]
    assert code == 1 and failed[0]["error"].startswith("[Errno 28] cannot write ")
    assert str(tmp_path / "inbox" / "photo.jpg.smolvlm.json") in failed[0]["error"]
    assert (tmp_path / "inbox" / "photo.jpg.txt").exists()  # the small file made it
    monkeypatch.setattr(atomic, "_atomic_write", real)
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out
    _complete_set(img)


def test_outputs_no_longer_produced_are_removed_when_still_ours(tmp_path, tiny_model, run_cli):
    """An output this run does not write (caption_txt turned off) was left behind describing an
    older version, and later refused as foreign; ours is removed, a person's edit is kept."""
    cfg = _config(tmp_path, tiny_model)
    a = make_image(tmp_path / "inbox" / "a.jpg", (80, 60), (1, 2, 3), fmt="JPEG")
    b = make_image(tmp_path / "inbox" / "b.jpg", (80, 60), (3, 2, 1), fmt="JPEG")
    assert run_cli("process", a, b, "-c", cfg, "--json")[0] == 0
    (tmp_path / "inbox" / "b.txt").write_text("my own caption")
    cfg.write_text(cfg.read_text().replace("caption_txt: true", "caption_txt: false"))
    assert run_cli("process", a, b, "-c", cfg, "--force", "--json")[0] == 0
    assert not (tmp_path / "inbox" / "a.txt").exists()
    assert (tmp_path / "inbox" / "b.txt").read_text() == "my own caption"
    assert "a.txt" not in _complete_set(a)["outputs"]


def test_a_file_restored_with_its_old_size_and_mtime_is_processed_again(tmp_path, tiny_model, monkeypatch):
    """Defect 2: a file that comes back unchanged (restored with cp -a, sidecars deleted by hand)
    kept its `done` row and was never processed again; the rescan now checks that the sidecars
    a done row recorded are still there, and `explain` and `backfill --missing` agree."""
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]",
                        extra="", extra_watch="")
    cfg.write_text(cfg.read_text().replace("state: {", "state: {rescan_interval: 1, "))
    monkeypatch.setattr(daemon_module, "QUIET_RESCAN_CEILING", 0)  # a rescan every second, quiet or not
    d = InProcess(cfg)
    try:
        img = make_image(tmp_path / "inbox" / "kept.png")
        d.wait_done([img])
        backup = tmp_path / "backup"
        backup.mkdir()
        shutil.copy2(img, backup / img.name)
        for p in (tmp_path / "inbox").iterdir():
            p.unlink()  # the folder is wiped ...
        wait_for(lambda: d.state(img) == "gone", 10, what="gone")
        shutil.copy2(backup / img.name, img)  # ... and the photo restored with cp -a: same size and mtime
        wait_for(lambda: (tmp_path / "inbox" / "kept.png.smolvlm.json").exists(), 20, what="sidecar rebuilt")
        d.wait_done([img])
        passes = d.daemon.engine.vision_passes
        (tmp_path / "inbox" / "kept.png.txt").unlink()  # a sidecar deleted by hand to force a rebuild
        wait_for(lambda: (tmp_path / "inbox" / "kept.png.txt").exists(), 20, what="rebuilt after a hand delete")
        # the results were current: the set is written again from the JSON, without the model
        assert d.daemon.engine.vision_passes == passes
        assert (tmp_path / "inbox" / "kept.png.txt").read_text() == read_sidecar(img)["tasks"]["ocr"]["result"]
    finally:
        d.stop()


def test_explain_and_backfill_missing_see_a_deleted_sidecar(tmp_path, tiny_model, run_cli):
    cfg = daemon_config(tmp_path, tiny_model)
    d = InProcess(cfg)
    img = make_image(tmp_path / "inbox" / "one.png")
    d.wait_done([img])
    d.stop()
    (tmp_path / "inbox" / "one.png.smolvlm.json").unlink()
    code, out, _ = run_cli("explain", "-c", cfg, img)
    assert "verdict: would be processed again (its sidecar one.png.smolvlm.json is missing)" in out, out
    code, out, _ = run_cli("backfill", "-c", cfg, "--missing")
    assert "queued 1 file(s)" in out, out


def test_stale_temp_files_are_removed_at_start_and_rescan(tmp_path, tiny_model):
    """Defect 3: `.smolvlm-tmp-*` of a write a kill interrupted stayed forever. Older than a
    minute they are removed (a fresh one may belong to a write in progress: kept)."""
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("state: {", "state: {rescan_interval: 1, "))
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    old = [inbox / f"{TEMP_PREFIX}abc123", inbox / "sub" / f"{TEMP_PREFIX}def456"]
    for p in old:
        p.write_text('{"half": "a sidecar"}')
        os.utime(p, (time.time() - 120, time.time() - 120))
    d = InProcess(cfg)
    try:
        assert not any(p.exists() for p in old)
        fresh = inbox / f"{TEMP_PREFIX}fresh"
        fresh.write_text("{}")
        late = inbox / f"{TEMP_PREFIX}late"
        late.write_text("{}")
        os.utime(late, (time.time() - 61, time.time() - 61))
        wait_for(lambda: not late.exists(), 10, what="the rescan removes the stale temp file")
        assert fresh.exists()
    finally:
        d.stop()
