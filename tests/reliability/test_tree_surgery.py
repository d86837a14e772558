"""What people and machines do to a watched tree: unmount and remount a share, watch through a
symlink, edit a file while it is processed, rename a folder, step the clock, leave a symlink to
elsewhere (issue 20, defects 10-14 and 16)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import Driven, InProcess, daemon_config, make_image, read_sidecar, wait_for, write_trap_plugin
from smolvlm_watch import journal as journal_module
from smolvlm_watch.journal import Journal, RetryPolicy
from smolvlm_watch.sidecar import sha256_bytes


def _mount_tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a namespace that allows it): {proc.stderr.strip()}")


def _share_config(tmp_path: Path, tiny_model: Path, state: str = "") -> Path:
    """The daemon watching ./share, rescanning every second."""
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("path: ./inbox", "path: ./share")
                   .replace("state: {", f"state: {{rescan_interval: 1, {state}"))
    return cfg


def test_an_unmounted_share_is_unavailable_not_every_file_deleted(tmp_path, tiny_model, run_cli):
    """Defect 10: an unmounted share whose mount-point folder stays behind was read as "every
    file deleted" (all rows `gone` at the next rescan while status showed the watch available),
    and on remount every file was re-read and re-hashed."""
    share = tmp_path / "share"
    _mount_tmpfs(share)
    cfg = _share_config(tmp_path, tiny_model)
    try:
        photos = [make_image(share / f"p{i}.png", color=(i, 40, 40)) for i in range(3)]
        d = Driven(cfg)
        try:
            assert d.step() == 3
            passes = d.daemon.engine.vision_passes
            kept = tmp_path / "kept"
            shutil.copytree(share, kept)  # what the server still holds
            subprocess.run(["umount", str(share)], check=True)
            d.rescan()
            d.rescan()  # two health checks and rescans of the empty mount point
            assert {d.state(p) for p in photos} == {"done"}
            d.daemon.write_meta()
            code, out, _ = run_cli("status", "-c", cfg, "--json")
            watch = json.loads(out)["watches"][0]
            assert watch["mode"] == "unavailable" and "unmounted share" in watch["reason"], watch
            _mount_tmpfs(share)  # the share comes back, with the same files and sidecars
            for p in kept.iterdir():
                shutil.copy2(p, share / p.name)
            d.rescan()
            d.rescan()
            assert {d.state(p) for p in photos} == {"done"}
            assert d.daemon.engine.vision_passes == passes  # nothing re-read or re-run
            assert d.armed.available and d.armed.mode == "native"
            new = make_image(share / "new.png")
            d.heard(new)  # and the watch is live again
            d.settle()
            assert d.state(new) == "done"
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", str(share)], capture_output=True)


def test_a_mount_point_holding_markers_is_unavailable_and_prune_removes_nothing(tmp_path, tiny_model, run_cli):
    """Issue 25, 4: the folder under the mount holds a marker (a .stfolder, lost+found, a note):
    not empty, yet not the share. Its files must not become `gone`, nor their sidecars pruned."""
    share = tmp_path / "share"
    for marker in (".stfolder", "lost+found"):
        (share / marker).mkdir(parents=True)
    (share / "NOT-MOUNTED.txt").write_text("the NAS is not mounted\n")
    _mount_tmpfs(share)
    cfg = _share_config(tmp_path, tiny_model, "gone_grace: 0s, ")
    try:
        photos = [make_image(share / f"p{i}.png", color=(i, 40, 40)) for i in range(3)]
        d = Driven(cfg)
        try:
            assert d.step() == 3
            subprocess.run(["umount", str(share)], check=True)
            d.rescan()
            d.rescan()  # health checks and rescans of the mount point with its markers
            assert {d.state(p) for p in photos} == {"done"}
            assert d.armed.unavailable == (
                "the folder is no longer a mount point (an unmounted share?); waiting for it to return")
        finally:
            d.stop()
        code, out, _ = run_cli("prune", "-c", cfg)
        assert code == 0 and out.startswith("prune: removed 0 sidecar file(s) of 0 file(s)"), out
    finally:
        subprocess.run(["umount", str(share)], capture_output=True)


def test_a_share_mounted_below_the_watch_is_out_of_reach_not_gone(tmp_path, tiny_model, run_cli):
    """Issue 25, 4: a share mounted on a subfolder of the watch (inbox/nas). Unmounted, its files
    keep their rows and sidecars, status says why; back, it is watched live again."""
    inbox, nas = tmp_path / "inbox", tmp_path / "inbox" / "nas"
    _mount_tmpfs(nas)
    cfg = daemon_config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("state: {", "state: {gone_grace: 0s, "))
    try:
        top = make_image(inbox / "top.png")
        far = [make_image(nas / f"n{i}.png", color=(i, 9, 9)) for i in range(2)]
        d = Driven(cfg)
        try:
            assert d.step() == 3
            kept = tmp_path / "kept"
            shutil.copytree(nas, kept)
            subprocess.run(["umount", str(nas)], check=True)
            d.rescan()
            d.rescan()
            assert {d.state(p) for p in far} == {"done"} and d.state(top) == "done"
            d.daemon.write_meta()
            code, out, _ = run_cli("status", "-c", cfg)
            assert (f"watch {inbox}: native (not mounted now: {nas}; the files there are kept as they were "
                    "until it returns)") in out.splitlines(), out
            code, out, _ = run_cli("prune", "-c", cfg)
            assert out.startswith("prune: removed 0 sidecar file(s) of 0 file(s)"), out
            _mount_tmpfs(nas)
            for p in kept.iterdir():
                shutil.copy2(p, nas / p.name)
            d.rescan()
            assert not d.armed.missing_mounts  # the sub-mount back
            new = make_image(nas / "after.png", color=(5, 5, 5))
            d.heard(new)
            d.settle()
            assert d.state(new) == "done"
            assert {d.state(p) for p in far} == {"done"}
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", str(nas)], capture_output=True)


def test_a_symlinked_watch_root_gets_live_events_for_its_top_level(tmp_path, tiny_model):
    """Defect 11: watchdog's inotify watch sat on the link (IN_DONT_FOLLOW), so files dropped in
    the root waited for the 300 s rescan."""
    real = tmp_path / "real-inbox"
    real.mkdir()
    cfg = daemon_config(tmp_path, tiny_model)
    (tmp_path / "inbox").rmdir()
    (tmp_path / "inbox").symlink_to(real)
    d = InProcess(cfg)
    try:
        dropped = make_image(real / "top.png")
        d.wait_done([tmp_path / "inbox" / "top.png"], timeout=15)  # the rescan is 300 s away
        assert dropped.with_name("top.png.smolvlm.json").exists()
    finally:
        d.stop()


def test_an_edit_during_the_files_own_job_is_processed_right_after(tmp_path, tiny_model, monkeypatch):
    """Defect 12: an edit landing while the file's job ran was refused ("picked up by the next
    scan"), so its sidecar described the old version for up to 300 s. Here the photo is saved
    again in the middle of its job, and the supervisor settles that edit while the job runs."""
    write_trap_plugin(tmp_path, "edittask", "edit", "edit.png", "import midjob; midjob.during and midjob.during()")
    (tmp_path / "midjob.py").write_text("during = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = daemon_config(tmp_path, tiny_model, tasks="[edit]", extra="plugins: [edittask]\n")
    img = make_image(tmp_path / "inbox" / "edit.png", color=(1, 1, 1))
    d = Driven(cfg)
    import midjob

    def during():
        midjob.during = None  # once
        make_image(img, color=(250, 0, 0))  # saved again from the editor, mid-job
        d.heard(img)
        for _ in range(2):  # the quiet period, then the confirming look: queued while its job runs
            d.clock.now += 0.31
            d.daemon.tick(d.clock.now)

    midjob.during = during
    try:
        assert d.step() == 1
        assert d.state(img) == "pending"  # not done: the version it read is not the file's now
        new_sha = sha256_bytes(img.read_bytes())
        assert d.step() == 1
        assert d.state(img) == "done" and read_sidecar(img)["source"]["sha256"] == new_sha
    finally:
        d.stop()


def test_a_renamed_folder_moves_its_rows_and_its_sidecars_say_where_they_are(tmp_path, tiny_model, run_cli):
    """Defect 13: after a folder rename the moved sidecars kept the old `source.path` and the
    old rows stayed `done` (status counted 201 done for 101 images) until the next rescan."""
    cfg = daemon_config(tmp_path, tiny_model)
    album = tmp_path / "inbox" / "album"
    photos = [make_image(album / f"a{i}.png", color=(i, 90, 0)) for i in range(3)]
    d = InProcess(cfg)
    try:
        d.wait_done(photos)
        passes = d.daemon.engine.vision_passes
        album.rename(tmp_path / "inbox" / "trip")
        moved = [tmp_path / "inbox" / "trip" / p.name for p in photos]
        d.wait_done(moved)
        wait_for(lambda: d.journal.counts()["done"] == 3, 10, what="only the new rows done")
        assert {d.state(p) for p in photos} == {"gone"}
        assert d.daemon.engine.vision_passes == passes
        for p in moved:
            assert read_sidecar(p)["source"]["path"] == str(p)
    finally:
        d.stop()


def test_retry_delays_survive_a_wall_clock_step(tmp_path, monkeypatch):
    """Defect 14: retry times used the wall clock: after a 1-hour step back a retry due in 5 s
    waited an hour. The journal's clock is monotonic, and resumes across a restart."""
    db = tmp_path / "j.sqlite"
    j = Journal(db, exclusive=True)
    j.enqueue(str(tmp_path / "a.png"), str(tmp_path), 1, 1.0)
    job = j.lease(60)
    assert j.failed(job.id, "flaky", True, RetryPolicy(5, 0.3, 0.3)) == "pending"
    real, ticking = time.time, time.monotonic
    waited = [0.0]  # seconds that pass, on both clocks, without a sleep
    monkeypatch.setattr(journal_module.time, "monotonic", lambda: ticking() + waited[0])
    monkeypatch.setattr(journal_module.time, "time", lambda: real() - 3600 + waited[0])  # NTP steps back an hour
    assert j.lease(60) is None
    waited[0] += 0.5
    assert j.lease(60) is not None  # due after its 0.3 s, not an hour
    assert j.failed(job.id, "flaky", True, RetryPolicy(5, 0.3, 0.3)) == "pending"
    j.close()
    j = Journal(db, exclusive=True)  # a restart under the stepped-back clock
    waited[0] += 0.5
    assert j.lease(60) is not None
    j.close()


def test_a_symlink_out_of_the_watch_is_reported_once_not_gone_at_every_rescan(tmp_path, tiny_model, run_cli):
    """Defect 16: such a symlink was silently recorded as `gone` at every rescan. Not following
    it is right; status and explain now say so."""
    elsewhere = make_image(tmp_path / "private" / "secret.png")
    cfg = daemon_config(tmp_path, tiny_model)
    link = tmp_path / "inbox" / "link.png"
    link.symlink_to(elsewhere)
    inside = make_image(tmp_path / "inbox" / "real.png")
    (tmp_path / "inbox" / "alias.png").symlink_to(inside)  # a link inside the watch is followed
    d = Driven(cfg)
    try:
        assert d.step() == 2
        assert {d.state(p) for p in (inside, tmp_path / "inbox" / "alias.png")} == {"done"}
        d.rescan()
        d.rescan()
        assert d.journal.get(str(link)) is None
        d.daemon.write_meta()
    finally:
        d.stop()
    assert not elsewhere.with_name("secret.png.smolvlm.json").exists()
    code, out, _ = run_cli("status", "-c", cfg)
    assert "skipped at the last scan: 1 a symlink to a file outside the watch" in out
    code, out, _ = run_cli("explain", "-c", cfg, link)
    assert f"not input: a symlink to a file outside the watch ({elsewhere}; not followed)" in out
