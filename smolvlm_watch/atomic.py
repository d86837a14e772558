"""Writing a file beside people's files: atomically, and as a file of that folder.

Every write goes to a temp file in the same folder (named with the writer's pid), is fsynced
and renamed over the target, so a reader sees the old file or the new one, never a mix. A file
replaced this way keeps the old one's group and mode, and its owner where this process may set
it (root, or the owner itself): in a family library a person's ``photo.jpg.xmp`` stays writable
by her and readable by the others. A new file gets ``mode`` (``outputs.mode``, 0644 by default),
and the group of its folder when the folder is setgid (the kernel does that), unless the folder
has a default ACL: then the ACL alone decides, as it does for every other file created there.
The mode is set on the open file (``fchmod``), so the process umask (the unit's ``UMask=``) does
not narrow it and is never flipped per file (another thread creating a file meanwhile would get
mode 0666).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import secrets
import threading
import time
from pathlib import Path

import structlog

TEMP_PREFIX = ".smolvlm-tmp-"
STALE_TEMP_SECONDS = 60.0
DEFAULT_MODE = 0o644


log = structlog.get_logger("smolvlm_watch.atomic")
_warned: set[Path] = set()


def atomic_write(path: Path, data: bytes, mode: int = DEFAULT_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix. An
    OSError names the file (a bare "No space left on device" helps nobody)."""
    try:
        _atomic_write(path, data, mode)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    acl = old is None and has_default_acl(path.parent)
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if acl else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if old is not None:
                _keep(f.fileno(), old, path)
            elif not acl:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _keep(fd: int, old: os.stat_result, path: Path) -> None:
    """The replaced file's mode, group and owner on the new one, as far as we may set them. A
    file its owner could write stays writable by her where she cannot stay its owner: through
    its group (made group-writable) when she is in it, else the write is refused (the old file
    stays as it is), never taken from her."""
    os.fchmod(fd, old.st_mode & 0o7777)
    for uid, gid in ((old.st_uid, old.st_gid), (-1, old.st_gid)):
        try:
            os.fchown(fd, uid, gid)
            break
        except PermissionError:
            continue
    else:
        uid, gid = -1, -1
    owner_lost = uid == -1 and old.st_uid != os.geteuid()
    mode = old.st_mode & 0o7777
    if owner_lost and mode & stat.S_IWUSR and not mode & stat.S_IWOTH:
        if gid == -1 or not _in_group(old.st_uid, old.st_gid):
            raise PermissionError(errno.EPERM, _TAKEN.format(uid=old.st_uid, gid=old.st_gid, we=os.geteuid()))
        mode |= stat.S_IWGRP
    if gid == -1:
        _warn(path, "its group", old)
    elif owner_lost:
        _warn(path, "its owner", old)
    if mode != old.st_mode & 0o7777 or old.st_mode & 0o6000:
        os.fchmod(fd, mode)  # chown clears setuid/setgid bits: put them back, with any group-write added


_TAKEN = ("it belongs to uid {uid}, who can write it; smolvlm-watch runs as uid {we} and cannot keep her as "
          "its owner, and she is not in its group {gid}: replacing it would take it from her, so it is left "
          "alone. Fix: put the daemon's user in a group she shares (and the file in that group), or run as root")


def _in_group(uid: int, gid: int) -> bool:
    """Whether user ``uid`` is in group ``gid`` (primary or supplementary); an unknown user (no
    entry here, as with some NAS directory services) counts as in it."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return True
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def _warn(path: Path, what: str, old: os.stat_result) -> None:
    """Once per folder: which part of a replaced file's identity could not be kept, and why."""
    if path.parent in _warned:
        return
    _warned.add(path.parent)
    log.warning("sidecar_identity_not_kept", path=str(path),
                kept="group, and mode (group-writable where the owner could write)" if what == "its owner" else "mode",
                lost=what, owner_uid=old.st_uid, group_gid=old.st_gid, we_are_uid=os.geteuid(),
                fix="only root or the file's owner can keep another user's ownership; sharing a group with the "
                    "people of the library (and group-writable files) keeps it writable to them")


def has_default_acl(folder: Path) -> bool:
    """Whether ``folder`` carries a POSIX default ACL (which then decides new files' modes)."""
    try:
        return bool(os.getxattr(folder, "system.posix_acl_default"))
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.EACCES):
            return False
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep_temp(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the temp files of writes that will never finish: their writer (named in the file
    name) is dead, or they are older than a minute (a writer on another machine sharing the
    folder is not ours to judge sooner). Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return []
    for entry in entries:
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if age > STALE_TEMP_SECONDS or _writer_gone(entry.name):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                continue
    return removed


def _writer_gone(name: str) -> bool:
    """The temp file's writer (``.smolvlm-tmp-PID-...``) is no longer running. A name without a
    pid (written before pids were recorded) is left to its age."""
    pid = name[len(TEMP_PREFIX):].split("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_swept: set[Path] = set()
_swept_lock = threading.Lock()


def sweep_once(folder: Path) -> None:
    """``sweep_temp`` the first time this process writes into ``folder`` (a `process` run after
    a kill cleans up after it; the daemon's scans sweep every folder anyway)."""
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    sweep_temp(folder)
