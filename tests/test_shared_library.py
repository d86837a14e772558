"""A family library (issue 14): two people and a shared group own the photos, the folders are
setgid; sidecars must behave like the files around them. Real users and a real group are
created (root only; CI runs as root); the unprivileged writer is this test's process turned into
a third user, which is what the systemd unit's own user is."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import traceback
from pathlib import Path

import pytest

from helpers import make_image
from smolvlm_watch.atomic import atomic_write

ALICE, BOB, DAEMON, FAMILY = "smw-alice", "smw-bob", "smw-daemon", "smw-family"
PERSONS_XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/></rdf:RDF></x:xmpmeta>
"""


def _ensure(kind: str, name: str, *args: str) -> None:
    lookup = grp.getgrnam if kind == "group" else pwd.getpwnam
    try:
        lookup(name)
    except KeyError:
        command = ["groupadd", "--system", name] if kind == "group" else [
            "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", *args, name]
        subprocess.run(command, check=True, capture_output=True)


@pytest.fixture(scope="module")
def people():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating users needs root and useradd (CI runs as root)")
    _ensure("group", FAMILY)
    for user in (ALICE, BOB, DAEMON):
        _ensure("user", user, "--groups", FAMILY)
    return {n: pwd.getpwnam(n).pw_uid for n in (ALICE, BOB, DAEMON)} | {FAMILY: grp.getgrnam(FAMILY).gr_gid}


@pytest.fixture
def album(people):
    """/tmp/…/album: alice's folder, group family, setgid and group-writable, as a family sets it
    up. Outside pytest's 0700 temp folder, so the other users can reach it."""
    root = Path(tempfile.mkdtemp(prefix="smolvlm-family-"))
    root.chmod(0o755)
    album = root / "album"
    album.mkdir()
    os.chown(album, people[ALICE], people[FAMILY])
    album.chmod(0o2775)
    yield album
    shutil.rmtree(root, ignore_errors=True)


def _own(path: Path, uid: int, gid: int, mode: int) -> Path:
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def _as(uid: int, gid: int, action) -> str | None:
    """Run ``action()`` in a child process turned into user ``uid`` (and the family group);
    None when it succeeded, else its error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, act, report, leave without running pytest's exit
        os.close(read)
        message = b""
        try:
            os.setgroups([grp.getgrnam(FAMILY).gr_gid])
            os.setgid(gid)
            os.setuid(uid)
            action()
        except BaseException:  # noqa: BLE001 - reported to the parent
            message = traceback.format_exc().encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read()
    os.waitpid(pid, 0)
    return message.decode() or None


def _append(path: Path):
    return lambda: os.close(os.open(path, os.O_WRONLY | os.O_APPEND))


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_sidecars_keep_the_family_library_shape(album, people, tiny_model, run_cli, write_config):
    alice, bob, family = people[ALICE], people[BOB], people[FAMILY]
    _own(make_image(album / "alice.jpg", fmt="JPEG"), alice, family, 0o664)
    _own(make_image(album / "bob.jpg", fmt="JPEG", color=(9, 9, 200)), bob, family, 0o664)
    xmp = album / "alice.jpg.xmp"
    xmp.write_text(PERSONS_XMP, encoding="utf-8")
    _own(xmp, alice, family, 0o664)
    before = xmp.stat().st_ino
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\ntasks: {{caption: {{max_new_tokens: 2}}}}\n"
                       f"outputs: {{mode: 0664}}\n"
                       f"watches: [{{path: {album}, tasks: [caption], outputs: [json, xmp]}}]\n")
    code, out, err = run_cli("process", album, "-c", cfg, "--json")
    assert code == 0, out + err
    assert xmp.stat().st_ino != before and 'xmp:Rating="5"' in xmp.read_text(encoding="utf-8")  # replaced, merged
    assert _identity(xmp) == (alice, family, 0o664)  # still hers
    for name in ("alice.jpg.smolvlm.json", "bob.jpg.smolvlm.json", "bob.jpg.xmp"):
        assert _identity(album / name)[1:] == (family, 0o664), name  # the folder's group, outputs.mode
    assert _as(alice, family, _append(xmp)) is None  # she can still edit her sidecar in darktable
    assert _as(bob, family, _append(album / "bob.jpg.xmp")) is None
    assert _as(bob, family, lambda: (album / "alice.jpg.smolvlm.json").read_bytes()) is None
    assert not [p.name for p in album.iterdir() if p.name.startswith(".smolvlm-tmp-")]


def test_a_daemon_running_as_its_own_user_keeps_group_and_mode(album, people):
    """What root alone may do (give a file to another user) the daemon's user cannot: the owner
    becomes the daemon's, the group and the mode stay, so the person can still write it."""
    alice, family, daemon = people[ALICE], people[FAMILY], people[DAEMON]
    xmp = album / "alice.jpg.xmp"
    xmp.write_text(PERSONS_XMP, encoding="utf-8")
    _own(xmp, alice, family, 0o664)
    new = album / "new.jpg.smolvlm.json"

    def write() -> None:
        atomic_write(xmp, PERSONS_XMP.replace('"5"', '"4"').encode(), 0o664)
        atomic_write(new, b"{}", 0o664)

    assert _as(daemon, grp.getgrnam(FAMILY).gr_gid, write) is None
    assert 'xmp:Rating="4"' in xmp.read_text(encoding="utf-8")
    assert _identity(xmp) == (daemon, family, 0o664)
    assert _identity(new) == (daemon, family, 0o664)  # setgid folder: the family's group
    assert _as(alice, family, _append(xmp)) is None
    assert not [p.name for p in album.iterdir() if p.name.startswith(".smolvlm-tmp-")]


def test_her_0644_sidecar_replaced_by_the_daemons_user_stays_writable_by_her(album, people):
    """Issue 25, 5: alice:family 0644 became smw-daemon:family 0644 — hers no more. Where the owner
    cannot be kept, she keeps write access through the group she is in; where she is in no group
    the file keeps, the write is refused and the file left as it was."""
    alice, family, daemon = people[ALICE], people[FAMILY], people[DAEMON]
    xmp = album / "alice.jpg.xmp"
    xmp.write_text(PERSONS_XMP, encoding="utf-8")
    _own(xmp, alice, family, 0o644)
    daemon_group = pwd.getpwnam(DAEMON).pw_gid  # a group alice is not in
    lonely = album / "lonely.jpg.xmp"
    lonely.write_text(PERSONS_XMP, encoding="utf-8")
    _own(lonely, alice, daemon_group, 0o644)

    def write() -> None:
        atomic_write(xmp, PERSONS_XMP.replace('"5"', '"3"').encode())
        atomic_write(lonely, b"ours")

    error = _as(daemon, family, write)
    assert _identity(xmp) == (daemon, family, 0o664) and 'xmp:Rating="3"' in xmp.read_text(encoding="utf-8")
    assert _as(alice, family, _append(xmp)) is None  # darktable can still save her edits
    assert error is not None and error.splitlines()[-1] == (
        f"PermissionError: [Errno 1] cannot write {lonely}: it belongs to uid {alice}, who can write it; "
        f"smolvlm-watch runs as uid {daemon} and cannot keep her as its owner, and she is not in its group "
        f"{daemon_group}: replacing it would take it from her, so it is left alone. Fix: put the daemon's user in a "
        "group she shares (and the file in that group), or run as root")
    assert lonely.read_text(encoding="utf-8") == PERSONS_XMP and _identity(lonely) == (alice, daemon_group, 0o644)
    assert not [p.name for p in album.iterdir() if p.name.startswith(".smolvlm-tmp-")]
