"""Live events for one watch's folder tree from Linux inotify, pruned as the scan prunes it.

Why not watchdog's inotify observer: it gives every folder below the root a watch, excluded
ones and a Synology's ``@eaDir`` (a folder per photo) included, and its API has no hook to skip
them. The earlier way round that subclassed watchdog's private ``InotifyWatchGroup``; watchdog
7.1.1 rebuilt those internals, the subclass's watches were never mapped back, and every live
event was dropped while nothing raised. This observer depends on no library's internals: it
drives the kernel's interface through ``inotify_simple`` (a literal ctypes wrapper of
``inotify_init1`` / ``inotify_add_watch`` / ``inotify_rm_watch`` / ``read``) and hands the
handler watchdog's public event classes, so the rest of the watcher is unchanged.

A new folder gets its watches, then a folder event, on which the handler scans it (files that
landed before its watch existed are found that way); an event-queue overflow is reported as a
folder event for the root, so the whole tree is looked at again instead of being dropped.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags
from watchdog.events import (DirCreatedEvent, DirDeletedEvent, FileClosedEvent, FileCreatedEvent,
                             FileDeletedEvent, FileModifiedEvent, FileSystemEvent, FileSystemEventHandler)

MASK = (flags.CREATE | flags.CLOSE_WRITE | flags.MODIFY | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE
        | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)
READ_TIMEOUT_MS = 200  # how soon stop() is noticed


class TreeObserver:
    """One watch's inotify instance and its reading thread (start/stop/join/is_alive, as
    watchdog's observers). Adding the root's own watch raises OSError (ENOSPC/EMFILE when the
    limits are reached: the caller falls back to polling); a later folder that cannot get one
    is put in ``exhausted`` when the limits are the reason, and the health check acts on it."""

    def __init__(self, root: Path, handler: FileSystemEventHandler, recursive: bool,
                 accept_dir: Callable[[Path], bool], exhausted: list[OSError]):
        self.root, self.handler, self.recursive = str(root), handler, recursive
        self.accept_dir, self.exhausted = accept_dir, exhausted
        self._fd = INotify()
        self._paths: dict[int, str] = {}
        self._wds: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"inotify {root}", daemon=True)
        try:
            self._add(self.root, root=True)
            if recursive:
                self._add_below(self.root)
        except BaseException:
            self._fd.close()
            raise

    # --- watches -----------------------------------------------------------------------------------

    def _add(self, path: str, root: bool = False) -> bool:
        try:
            wd = self._fd.add_watch(path, MASK)
        except OSError as exc:
            if root:
                raise
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                self.exhausted.append(exc)
            return False  # vanished meanwhile, or unreadable: the rescan still covers it
        self._paths[wd], self._wds[path] = path, wd
        return True

    def _add_below(self, top: str) -> None:
        for folder, dirs, _ in os.walk(top):  # symlinked folders are not followed, as the scan
            dirs[:] = [d for d in dirs if self.accept_dir(Path(folder, d))]
            for d in dirs:
                self._add(os.path.join(folder, d))

    def _forget(self, top: str) -> None:
        """A folder moved away or deleted: its watches (and its subfolders') are let go."""
        prefix = top + os.sep
        for path in [p for p in self._wds if p == top or p.startswith(prefix)]:
            wd = self._wds.pop(path)
            self._paths.pop(wd, None)
            try:
                self._fd.rm_watch(wd)
            except OSError:
                pass  # the kernel already dropped it (IN_IGNORED)

    @property
    def watched(self) -> int:
        return len(self._wds)

    # --- reading -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self._fd.read(timeout=READ_TIMEOUT_MS)
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            for event in events:
                self._dispatch(event.wd, event.mask, os.fsdecode(event.name))

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & flags.Q_OVERFLOW:
            self.handler.dispatch(DirCreatedEvent(self.root))  # events were lost: look at everything
            return
        folder = self._paths.get(wd)
        if mask & flags.IGNORED:
            if folder is not None:
                self._wds.pop(folder, None)
                self._paths.pop(wd, None)
            return
        if folder is None or not name:
            return
        path = os.path.join(folder, name)
        event = self._event(path, mask, bool(mask & flags.ISDIR))
        if event is not None:
            self.handler.dispatch(event)

    def _event(self, path: str, mask: int, is_dir: bool) -> FileSystemEvent | None:
        if mask & (flags.CREATE | flags.MOVED_TO):
            if not is_dir:
                return FileCreatedEvent(path)
            if self.recursive and self.accept_dir(Path(path)) and self._add(path):
                self._add_below(path)
            return DirCreatedEvent(path)
        if mask & (flags.MOVED_FROM | flags.DELETE):
            if is_dir:
                self._forget(path)
                return DirDeletedEvent(path)
            return FileDeletedEvent(path)
        if is_dir:
            return None
        if mask & flags.CLOSE_WRITE:
            return FileClosedEvent(path)
        if mask & flags.MODIFY:
            return FileModifiedEvent(path)
        return None

    # --- the observer's life -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive() and not self._fd.closed:
            self._fd.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()
