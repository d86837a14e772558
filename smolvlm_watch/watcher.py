"""Finding the files to process: filter, scan, stability tracker and observers.

As in paperless-ngx's consumer, each part is small and named: the filter decides what counts as
input (media extensions, default ignores merged with the watch's include/exclude globs, never our
own sidecars or temp files); the scan walks a watch without descending into excluded folders;
watchdog's thread only reports candidate paths to the stability tracker; the health check
restarts dead observers. The daemon (service.py) owns the loop that ties them together.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from .config import WatchConfig
from .media import MEDIA_EXTENSIONS
from .atomic import TEMP_PREFIX, sweep_temp

DEFAULT_IGNORED_FILES = (
    ".DS_Store", "._*", "Thumbs.db", "desktop.ini", "*.part", "*.crdownload", "*.tmp", "~$*",
    ".syncthing.*.tmp", f"{TEMP_PREFIX}*", "*.smolvlm.json", "*.xmp",
)
DEFAULT_IGNORED_DIRS = ("@eaDir", ".stfolder", ".stversions", ".Trashes", "__MACOSX")
# The default ignores as one compiled pattern: a scan asks it of every name (one match instead of
# a dozen fnmatch calls); which pattern matched is looked up only for a name it ignores.
_IGNORED_FILES = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in DEFAULT_IGNORED_FILES))


class MediaFilter:
    """What a watch takes as input. Hidden files and folders are always ignored."""

    def __init__(self, watch: WatchConfig):
        self.root = watch.path
        self.include = watch.include
        self.exclude = watch.exclude
        self.recursive = watch.recursive
        self.output_dir = watch.output.output_dir.resolve() if watch.output.output_dir else None
        self.json_suffix = watch.output.json_suffix
        self.ocr_suffix = watch.output.ocr_suffix

    def _rel(self, path: Path) -> str | None:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                return None

    def _excluded(self, rel: str, name: str) -> bool:
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in self.exclude)

    def accepts_dir(self, path: Path) -> bool:
        """Whether to descend into (and watch) a folder below the root."""
        name = path.name
        if name.startswith(".") or name in DEFAULT_IGNORED_DIRS:
            return False
        if self.output_dir is not None and path.resolve() == self.output_dir:
            return False
        rel = self._rel(path)
        return rel is not None and not self._excluded(rel, name) and not self._excluded(rel + "/", name)

    def _ocr_text(self, name: str) -> bool:
        """``photo.jpg.txt``: the OCR text we write beside a media file (named after it whole)."""
        return name.endswith(self.ocr_suffix) and Path(name[: -len(self.ocr_suffix)]).suffix.lower() in MEDIA_EXTENSIONS

    def reason_on_disk(self, path: Path) -> str | None:
        """``reason``, and for a file that exists, whether it is one a scan takes: a FIFO or a
        device under a media name is passed over (``open_input`` would refuse it anyway)."""
        why = self.reason(path)
        if why is None and path.exists() and not path.is_file():
            return NOT_REGULAR
        return why

    def accepts(self, path: Path) -> bool:
        """Whether a file is input for this watch (by name alone; content is checked on decode)."""
        return self.reason(path) is None

    def reason(self, path: Path) -> str | None:
        """Why a file is not input for this watch, or None when it is."""
        name = path.name
        why = self.name_reason(name)
        if why is not None:
            return why
        rel = self._rel(path)
        if rel is None:
            return f"outside the watched folder {self.root}"
        parts = rel.split("/")
        if len(parts) > 1 and not self.recursive:
            return "in a subfolder of a non-recursive watch"
        parent = self.root
        for part in parts[:-1]:
            parent = parent / part
            if not self.accepts_dir(parent):
                return f"inside an ignored or excluded folder ({parent})"
        return self.glob_reason(rel, name) or self.link_reason(path)

    def name_reason(self, name: str) -> str | None:
        """The rules a file's name alone decides (hidden, ours, ignored, not media): a scan asks
        them before it makes a path of the name (half a library's names are our own sidecars)."""
        if name.startswith("."):
            return "hidden file"
        if name.endswith(self.json_suffix) or name.startswith(TEMP_PREFIX) or self._ocr_text(name):
            return SIDECAR
        if _IGNORED_FILES.match(name):
            pattern = next(p for p in DEFAULT_IGNORED_FILES if fnmatch.fnmatchcase(name, p))
            return f"ignored by default ({pattern})"
        suffix = os.path.splitext(name)[1]
        if suffix.lower() not in MEDIA_EXTENSIONS:
            return f"extension {suffix or '(none)'!r} is not a media extension"
        return None

    def glob_reason(self, rel: str, name: str) -> str | None:
        """The watch's include and exclude globs, on the path below the watch or the name."""
        if self.include and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in self.include):
            return f"matches none of the include globs {list(self.include)}"
        if self._excluded(rel, name):
            return f"matches an exclude glob {list(self.exclude)}"
        return None

    def link_reason(self, path: Path) -> str | None:
        """Symlinks are followed only to files inside the watch: one pointing elsewhere would let
        a watch reach (and write sidecars beside) files it was never given."""
        if not path.is_symlink():
            return None
        try:
            target = path.resolve(strict=True)
        except (RuntimeError, OSError) as exc:
            return (SYMLINK_LOOP if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
                    else SYMLINK_BROKEN)
        if not target.is_relative_to(self.root.resolve()):
            return f"{SYMLINK_OUT} ({target}; not followed)"
        return None


SIDECAR = "a smolvlm-watch sidecar or temp file"
SYMLINK_OUT = "a symlink to a file outside the watch"
NOT_REGULAR = "not a regular file (a FIFO, socket or device under a media name)"
SYMLINK_LOOP = "a symlink loop"
SYMLINK_BROKEN = "a broken symlink"


@dataclass
class ScanReport:
    """What a scan passed over that a person may wonder about: files with a name a watch does
    not take (by extension), symlinks not followed, temp files of dead writes removed."""

    skipped: Counter[str] = field(default_factory=Counter)
    temp_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped.most_common()), "temp_removed": self.temp_removed}


@dataclass(frozen=True)
class Listing:
    """What a rescan needs of a folder it does not list again: which folder it was (device,
    inode: a folder moved in under the same name keeps its own old mtime) and its mtime (ns),
    the subfolders to walk and what was passed over (counted as ``ScanReport.skipped``). Not its
    files: a folder as it was yields none."""

    identity: tuple[int, int, int]
    dirs: tuple[str, ...]
    skipped: tuple[tuple[str, int], ...]


FULL_WALK_EVERY = 12  # rescans: every 12th lists every folder (hourly at the default 300 s)
QUIET_SECONDS = 2.0  # a folder changed more recently than this is listed again next time
MTIME_SAFE_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "f2fs", "bcachefs"})


class FolderMemo:
    """What each folder of a watch held at its last listing, so a rescan need not list or stat
    it again: adding, removing or renaming an entry changes a folder's mtime, so a folder with
    the mtime it had holds the same names (Immich's and Syncthing's scanners lean on the same
    fact). A file rewritten in place changes no folder; the live events report those, and every
    ``FULL_WALK_EVERY``-th rescan lists everything. Kept only on local file systems with
    nanosecond mtimes (``MTIME_SAFE_FS``), and a folder that changed within ``QUIET_SECONDS`` of
    its listing is listed again (a change in the same clock tick would not move its mtime)."""

    def __init__(self) -> None:
        self.folders: dict[str, Listing] = {}
        self.recalled: set[str] = set()  # folders the current walk took from here
        self.rescans = 0
        self.trusting = False

    def begin(self) -> None:
        """A new rescan: recall unchanged folders, except on every ``FULL_WALK_EVERY``-th, which
        starts the memory afresh (folders deleted since are forgotten with it)."""
        self.rescans += 1
        self.trusting = self.rescans % FULL_WALK_EVERY != 0
        self.recalled = set()
        if not self.trusting:
            self.folders = {}

    def recall(self, folder: str) -> Listing | None:
        kept = self.folders.get(folder) if self.trusting else None
        if kept is None:
            return None
        try:
            if _identity(os.stat(folder)) != kept.identity:
                return None
        except OSError:
            return None
        self.recalled.add(folder)
        return kept

    def keep(self, folder: str, listing: Listing) -> None:
        if time.time() - listing.identity[2] / 1e9 > QUIET_SECONDS:
            self.folders[folder] = listing
        else:
            self.folders.pop(folder, None)


def scan(watch: WatchConfig, media_filter: MediaFilter | None = None,
         report: ScanReport | None = None, memo: FolderMemo | None = None) -> Iterator[Path]:
    """Every input file below the watch's folder (see ``walk``), as paths."""
    return (Path(entry.path) for entry in walk(watch, media_filter, report, memo))


def walk(watch: WatchConfig, media_filter: MediaFilter | None = None,
         report: ScanReport | None = None, memo: FolderMemo | None = None) -> Iterator[os.DirEntry[str]]:
    """Every input file below the watch's folder, sorted per folder, excluded folders pruned, as
    the directory entries the listing gave (their ``stat()`` is the one call a caller needs).
    With a ``report``, also removes stale temp files of interrupted writes on the way and counts
    what it skipped that a person may wonder about. With a ``memo``, a folder unchanged since its
    last listing is taken from it and yields nothing (its files are as they were; ``memo.recalled``
    names those folders), and each new listing is kept there."""
    f = media_filter or MediaFilter(watch)
    top = str(watch.path)
    whole = os.path.normpath(top) == os.path.normpath(str(f.root))  # a walk from the root: folders judged on the way
    stack = [top]
    while stack:
        folder = stack.pop()
        seen = memo.recall(folder) if memo is not None else None
        if seen is None:
            below = "" if folder == top else os.path.relpath(folder, top).replace(os.sep, "/") + "/"
            listed = _list(folder, below if whole else None, watch.recursive, f, report)
            if listed is None:
                continue
            seen, inputs = listed
            if memo is not None:
                memo.keep(folder, seen)
            yield from inputs
        if report is not None:
            report.skipped.update(dict(seen.skipped))
        stack.extend(os.path.join(folder, d) for d in reversed(seen.dirs))


def _list(folder: str, below: str | None, recursive: bool, f: MediaFilter,
          report: ScanReport | None) -> tuple[Listing, list[os.DirEntry[str]]] | None:
    """List one folder: its accepted subfolders and what it passed over, and its input files
    (``below``: its path relative to the filter's root when the walk started there). With a
    ``report``, stale temp files of interrupted writes are removed and counted there. The
    entries' own types answer "folder?", "symlink?" and "regular file?" without a call per
    file where the file system reports types (a symlink is still followed to judge it)."""
    try:
        identity = _identity(os.stat(folder))  # before the listing: a change during it shows next time
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return None
    here = Path(folder)
    dirs, files = [], []
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            files.append(e)
        elif recursive and not e.is_symlink() and f.accepts_dir(here / e.name):
            dirs.append(e.name)
    if report is not None and any(e.name.startswith(TEMP_PREFIX) for e in files):
        report.temp_removed += len(sweep_temp(here))
    inputs, skipped = [], ScanReport()
    for e in sorted(files, key=lambda e: e.name):
        why = f.name_reason(e.name)
        if why == SIDECAR:
            continue  # ours: never input, never counted
        if below is not None:  # the name, then the globs on the path below the root the walk already has
            why = why or f.glob_reason(below + e.name, e.name) or _entry_link_reason(e, f)
        else:  # a folder inside the watch: every rule, its ancestors included
            why = why or f.reason(Path(e.path))
        if why is None:
            if _is_file(e):
                inputs.append(e)
            else:
                skipped.skipped["not regular files (a FIFO, socket or device under a media name)"] += 1
        else:
            _count(skipped, Path(e.path), why)
    return Listing(identity, tuple(sorted(dirs)), tuple(skipped.skipped.items())), inputs


def _entry_link_reason(entry: os.DirEntry[str], f: MediaFilter) -> str | None:
    """``link_reason``, asked only of an entry the listing says is a symlink."""
    try:
        link = entry.is_symlink()
    except OSError:  # gone since the listing: the regular-file check counts it
        return None
    return f.link_reason(Path(entry.path)) if link else None


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _count(report: ScanReport, path: Path, why: str) -> None:
    if why.startswith("extension "):
        report.skipped[f"{path.suffix.lower() or '(no extension)'} files (not a media extension)"] += 1
    elif why.startswith(("a symlink", "a broken symlink")):
        report.skipped[why.split(" (")[0]] += 1


# --- live watching -----------------------------------------------------------------------------

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "sshfs", "afs", "ncpfs", "glusterfs", "ceph",
              "davfs", "virtiofs", "vboxsf", "fuseblk"}


class StabilityTracker:
    """Holds candidate paths until they are quiet: no event for ``settle`` seconds, size and mtime
    unchanged between two looks, and still a regular file. After ``max_wait`` a still-changing
    file is taken anyway (and reported as such); a vanished file is dropped silently. ``clock``
    is the daemon's (a test's fake one moves only when the test says so)."""

    def __init__(self, settle: float, max_wait: float, clock: Callable[[], float] = time.monotonic):
        self.settle, self.max_wait, self.clock = settle, max_wait, clock
        self._lock = threading.Lock()
        self._seen: dict[Path, list] = {}  # path -> [first_seen, last_event, last_stat]

    def touch(self, path: Path, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            entry = self._seen.get(path)
            if entry is None:
                self._seen[path] = [now, now, None]
            else:
                entry[1] = now

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return path in self._seen

    def due(self, now: float | None = None) -> list[tuple[Path, bool]]:
        """Paths ready to hand over, each with ``forced`` (taken at max_wait while still changing)."""
        now = self.clock() if now is None else now
        ready = []
        with self._lock:
            for path, entry in list(self._seen.items()):
                first, last, previous = entry
                if now - last < self.settle and now - first < self.max_wait:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    del self._seen[path]
                    continue
                if not stat.S_ISREG(st.st_mode):
                    del self._seen[path]
                    continue
                current = (st.st_size, st.st_mtime_ns)
                forced = now - first >= self.max_wait
                if current == previous or forced:
                    del self._seen[path]
                    ready.append((path, forced and current != previous))
                elif previous is None:
                    entry[2] = current  # first look after the quiet period: confirm on the next tick
                else:
                    entry[1], entry[2] = now, current  # it changed without an event: quiet again first
        return ready


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's thread: only reports paths, never does work. A watch whose root is a
    symlink is observed at its real path (inotify does not follow the link for the root's own
    entries); paths are reported under the configured root, as the scan finds them."""

    def __init__(self, armed: ArmedWatch, report_dir: Callable[[Path], None]):
        self.armed, self.report_dir = armed, report_dir
        self.root, self.real = armed.watch.path, armed.watch.path.resolve()

    def _path(self, raw: str | bytes) -> Path:
        path = Path(os.fsdecode(raw))
        if self.real != self.root and path.is_relative_to(self.real):
            return self.root / path.relative_to(self.real)
        return path

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("moved", "deleted"):
            self.armed.gone.append(self._path(event.src_path))  # checked by the supervisor before it counts
        if kind not in ("created", "modified", "closed", "moved"):
            return
        path = self._path(event.dest_path if kind == "moved" else event.src_path)
        if event.is_directory:
            if kind in ("created", "moved"):
                self.report_dir(path)
        elif self.armed.filter.accepts(path):
            self.armed.tracker.touch(path)


def filesystem_type(path: Path, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The file system type of the mount holding ``path`` (longest mount point prefix)."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, fstype = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, parts[2]
    return fstype


def is_network_fs(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NETWORK_FS or fstype.startswith("fuse"))


def max_user_watches() -> int | None:
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


def count_dirs(watch: WatchConfig, media_filter: MediaFilter, limit: int) -> int:
    """Folders a recursive native watch would need (stops counting past ``limit``)."""
    n = 0
    for folder, dirs, _ in os.walk(watch.path):
        n += 1
        if n > limit:
            break
        here = Path(folder)
        dirs[:] = [d for d in dirs if watch.recursive and media_filter.accepts_dir(here / d)]
    return n


INOTIFY_FIX = ("sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=1024 "
               "(persist it in /etc/sysctl.d/90-inotify.conf)")


def choose_mode(watch: WatchConfig, media_filter: MediaFilter) -> tuple[str, str]:
    """The watching mode a watch gets, and why: polling where events cannot be trusted."""
    if watch.polling == "on":
        return "polling", "polling: on"
    if watch.polling == "off":
        return "native", "polling: off"
    fstype = filesystem_type(watch.path)
    if is_network_fs(fstype):
        return "polling", f"{fstype} file system delivers no change events"
    limit = max_user_watches()
    if limit is not None:
        dirs = count_dirs(watch, media_filter, limit)
        if dirs > limit:
            return "polling", f"more than {limit} folders, over fs.inotify.max_user_watches={limit}"
    return "native", f"{fstype or 'local'} file system"


def native_observer(root: Path, handler: FileSystemEventHandler, recursive: bool,
                    accept_dir: Callable[[Path], bool], exhausted: list[OSError]) -> Observing:
    """Live events for one watch: our pruned inotify tree (excluded and ignored folders get no
    watches; watches running out later is put in ``exhausted``) where Linux inotify is there,
    watchdog's stock observer elsewhere."""
    try:
        from .inotify_tree import TreeObserver
    except (ImportError, OSError):  # not Linux: no inotify
        observer = Observer()
        observer.schedule(handler, str(root), recursive=recursive)
        return observer
    return TreeObserver(root, handler, recursive, accept_dir, exhausted)


class Observing(Protocol):
    """What the watch set needs of an observer: watchdog's observers and ``TreeObserver``."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


CANARY_SECONDS = 3.0


def canary(folder: Path) -> str | None:
    """Check that the native observer delivers events at all, in a throwaway folder under
    ``folder`` (the state folder): a file is created there and its event must arrive within
    ``CANARY_SECONDS``. None when it did; otherwise why not, and the caller watches by polling. A
    library or kernel change that silences events is then caught at start, not by a person
    weeks later."""
    probe = Path(tempfile.mkdtemp(prefix=".smolvlm-canary-", dir=folder))
    seen = threading.Event()

    class Seen(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if Path(os.fsdecode(event.src_path)).name == "probe.jpg":
                seen.set()

    observer: Observing | None = None
    try:
        observer = native_observer(probe, Seen(), False, lambda _: True, [])
        observer.start()
        (probe / "probe.jpg").write_bytes(b"canary")
        if not seen.wait(CANARY_SECONDS):
            return (f"the native observer reported no event within {CANARY_SECONDS:g} s in a test folder "
                    f"({probe.parent})")
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EMFILE):
            return None  # the inotify limits, not a deaf observer: each watch falls back on its own
        return f"the native observer could not start in a test folder ({exc.strerror or exc})"
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        shutil.rmtree(probe, ignore_errors=True)


@dataclass(frozen=True)
class Device:
    """The file system a watch's folder is on, as last seen with files in it."""

    dev: int
    mount: bool  # the folder is itself a mount point
    probe: str | None = None  # one entry of the folder then: there again means the same library
    submounts: tuple[str, ...] = ()  # file systems mounted below the folder then

    def as_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "mount": self.mount, "probe": self.probe, "submounts": list(self.submounts)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Device:
        return cls(d["dev"], d["mount"], d.get("probe"), tuple(d.get("submounts") or ()))


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point of this process's namespace (bind mounts included, which st_dev misses)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return set()
    return {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


MARKERS = ("lost+found",)  # entries a mount point's own folder may hold: never a probe


def _probe(root: Path, expected: Device | None, same_dev: bool) -> str | None:
    """An entry of the folder to know it again by: the last one while it is there, else the
    first visible entry (hidden markers such as Syncthing's .stfolder, and lost+found, are
    what an empty mount point holds)."""
    if expected and expected.probe and same_dev and os.path.lexists(root / expected.probe):
        return expected.probe
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.name not in MARKERS)
    return names[0] if names else None


def presence(root: Path, expected: Device | None) -> tuple[Device | None, str | None]:
    """The folder's device now, and why the watch cannot be trusted now (None: it can). A share
    that is unmounted leaves its mount-point folder behind, empty or holding a marker (a
    .stfolder, lost+found): read as "every file was deleted", it would mark the whole library
    gone and let ``prune`` remove its sidecars. So availability is decided by the device: a
    folder that was a mount point and is no longer one, or that is on another file system than
    the one last seen and lacks the entry it held then (or is empty), is unavailable."""
    if not root.exists():
        return None, "folder does not exist or is not mounted"
    if not root.is_dir():
        return None, "the watch path is a file, not a folder (fix watches[].path)"
    try:
        mounts = mount_points()
        real = str(root.resolve())
        dev = os.stat(root).st_dev
        same = expected is not None and dev == expected.dev
        probe = _probe(root, expected, same)
    except OSError as exc:
        return None, f"folder cannot be read ({exc.strerror or exc})"
    now = Device(dev, real in mounts, probe, tuple(sorted(m for m in mounts if m.startswith(real.rstrip("/") + "/"))))
    if expected is None:
        return now, None
    if expected.mount and not now.mount:
        return now, "the folder is no longer a mount point (an unmounted share?); waiting for it to return"
    if not same and (probe is None or (expected.probe is not None and not os.path.lexists(root / expected.probe))):
        return now, ("the folder is not the file system it was, and does not hold what it held (an unmounted "
                     "share?); waiting for it to return")
    return now, None


@dataclass
class ArmedWatch:
    """One watch's observer, filter and tracker, the mode it runs in, and whether its folder
    can be trusted now (``unavailable`` says why not)."""

    watch: WatchConfig
    filter: MediaFilter
    tracker: StabilityTracker
    mode: str = "native"
    reason: str = ""
    observer: Observing | None = None
    armed_at: float = 0.0  # wall clock: a change after this should have come as a live event
    unavailable: str | None = None
    device: Device | None = None  # the file system last seen holding its files
    exhausted: list[OSError] = field(default_factory=list)  # inotify ran out of watches after start
    gone: deque[Path] = field(default_factory=deque)  # moved or deleted paths, for the supervisor to check
    missed: int = 0  # files a rescan found that the native observer never reported
    missing_mounts: tuple[str, ...] = ()  # sub-mounts last seen below the folder, not mounted now
    memo: FolderMemo | None = None  # its folders as last listed, where mtimes can be trusted (rescans)

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def unreported(self, path: Path) -> bool:
        """Whether a file a rescan just queued is one a working native observer would have
        reported: changed (its ctime, which copying with old mtimes does not fake) after the
        watch was armed and longer ago than the settle time, and not waiting in the tracker."""
        if self.mode != "native" or path in self.tracker:
            return False
        try:
            changed = os.stat(path).st_ctime
        except OSError:
            return False
        return self.armed_at < changed < time.time() - max(self.watch.settle_seconds, MISSED_SLACK)

    @property
    def degraded(self) -> str | None:
        """Why the live events of this watch cannot be trusted now (None: they can)."""
        if self.mode == "native" and self.missed:
            return (f"live events missed {self.missed} file(s) that a rescan found (the watch moves to polling "
                    f"at {MISSED_LIMIT})")
        return None

    def check(self) -> bool:
        """Look at the folder now; True when it can be trusted (a new device that holds what
        the old one held is the watch's device from here on: a library moved to a new disk). A
        file system that was mounted below the folder and is not now is listed in
        ``missing_mounts``: what lies there is not gone, only out of reach."""
        device, self.unavailable = presence(self.watch.path, self.device)
        if self.unavailable is None and device is not None:
            recorded = self.device.submounts if self.device else ()
            self.missing_mounts = tuple(m for m in recorded if m not in device.submounts and os.path.isdir(m))
            self.device = replace(device, submounts=tuple(sorted({*device.submounts, *self.missing_mounts})))
        return self.unavailable is None

    def reachable(self, path: str) -> bool:
        """False for a path below a sub-mount that is not mounted now."""
        return not any(path == m or path.startswith(m + "/") for m in self.missing_mounts)


MISSED_LIMIT = 3  # files found by rescans, never reported live, before a watch moves to polling
MISSED_SLACK = 2.0  # seconds an event may take from the kernel to the tracker


class WatchSet:
    """Arms every watch with a suitable observer and keeps them alive (the health check).
    ``devices``: each watch's file system as last seen with files (kept in the journal, so an
    unmounted share is recognised at the next start too)."""

    def __init__(self, watches: tuple[WatchConfig, ...], on_dir: Callable[[ArmedWatch, Path], None],
                 log: Any, devices: dict[str, Device] | None = None, canary_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.on_dir = on_dir
        self.canary_dir = canary_dir  # where the native observer is proven at start (the state folder)
        self.canary_failed: str | None = None
        devices = devices or {}
        self.armed = [ArmedWatch(w, MediaFilter(w), StabilityTracker(w.settle_seconds, w.max_settle_seconds,
                                                                     clock), device=devices.get(str(w.path)))
                      for w in watches]

    @property
    def devices(self) -> dict[str, Device]:
        return {str(a.watch.path): a.device for a in self.armed if a.device is not None}

    def start(self) -> None:
        if self.canary_dir is not None and any(a.watch.polling != "on" for a in self.armed):
            self.canary_failed = canary(self.canary_dir)
            if self.canary_failed:
                self.log.error("live_events_not_working", reason=self.canary_failed,
                               fix="watching by polling; report the watchdog, inotify_simple and kernel versions")
        for armed in self.armed:
            self._arm(armed)

    def _arm(self, armed: ArmedWatch, force_polling: str = "") -> None:
        w = armed.watch
        if not armed.check():
            armed.observer = None
            self.log.error("watch_unavailable", watch=str(w.path), error=armed.unavailable)
            return
        mode, reason = ("polling", force_polling) if force_polling else choose_mode(w, armed.filter)
        if mode == "native" and self.canary_failed:
            mode, reason = "polling", f"live events failed their test at start: {self.canary_failed}"
        armed.armed_at = time.time()
        armed.memo = FolderMemo() if filesystem_type(w.path) in MTIME_SAFE_FS else None
        if "max_user_watches" in reason:
            self.log.warning("inotify_limit", watch=str(w.path), reason=reason, fix=INOTIFY_FIX)
        try:
            armed.observer = self._start_observer(armed, mode)
        except OSError as exc:
            if mode != "native" or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            self.log.warning("inotify_failed_falling_back_to_polling", watch=str(w.path), error=str(exc),
                             fix=INOTIFY_FIX)
            mode, reason = "polling", f"inotify failed: {exc.strerror or exc}"
            armed.observer = self._start_observer(armed, mode)
        armed.mode, armed.reason = mode, reason
        self.log.info("watch_armed", watch=str(w.path), mode=mode, reason=reason)

    def _start_observer(self, armed: ArmedWatch, mode: str) -> Observing:
        w = armed.watch
        handler = _Handler(armed, lambda d: self.on_dir(armed, d))
        if mode == "native":
            native = native_observer(w.path.resolve(), handler, w.recursive, armed.filter.accepts_dir,
                                     armed.exhausted)
            native.start()
            return native
        observer = PollingObserver(timeout=w.poll_interval)
        try:
            observer.schedule(handler, str(w.path.resolve()), recursive=w.recursive)
            observer.start()
        except BaseException:
            observer.stop()
            raise
        return observer

    def healthy(self) -> None:
        """Restart observers whose thread died or whose folder came back; move to polling a
        watch out of inotify watches or deaf to live events. A vanished or unmounted folder is
        marked unavailable (``ArmedWatch.unavailable``), never taken as 'every file was deleted'."""
        for armed in self.armed:
            if armed.exhausted and armed.mode == "native":
                exc = armed.exhausted[0]
                self.log.warning("inotify_failed_falling_back_to_polling", watch=str(armed.watch.path),
                                 error=str(exc), fix=INOTIFY_FIX)
                armed.exhausted.clear()
                self._rearm(armed, force_polling=f"inotify failed: {exc.strerror or exc}")
                continue
            if armed.missed >= MISSED_LIMIT and armed.mode == "native":
                why = f"live events missed {armed.missed} file(s) that rescans found"
                self.log.error("live_events_missed_switching_to_polling", watch=str(armed.watch.path), reason=why)
                armed.missed = 0
                self._rearm(armed, force_polling=why)
                continue
            was, missing = armed.available, set(armed.missing_mounts)
            if not armed.check():
                if was:
                    self.log.error("watch_unavailable", watch=str(armed.watch.path), error=armed.unavailable)
                self._stop(armed)
                continue
            if set(armed.missing_mounts) - missing:
                self.log.error("submount_unavailable", watch=str(armed.watch.path),
                               mounts=sorted(set(armed.missing_mounts) - missing),
                               meaning="its files are kept as they were until it returns")
            if back := missing - set(armed.missing_mounts):
                self.log.warning("submount_back", watch=str(armed.watch.path), mounts=sorted(back))
                self._rearm(armed, [Path(m) for m in sorted(back)])  # its watches went at the unmount
                continue
            if was and armed.observer is not None and armed.observer.is_alive():
                continue
            self.log.warning("observer_restarted", watch=str(armed.watch.path),
                             reason="observer thread died" if was else "folder is back")
            self._rearm(armed)

    def _rearm(self, armed: ArmedWatch, folders: list[Path] | None = None, force_polling: str = "") -> None:
        """A watch's observer made anew (polling, when ``force_polling`` says why), then what
        landed unseen meanwhile looked at: the ``folders`` given, else the whole watch."""
        self._stop(armed)
        self._arm(armed, force_polling)
        for folder in folders or [armed.watch.path]:
            self.on_dir(armed, folder)

    def _stop(self, armed: ArmedWatch) -> None:
        if armed.observer is not None:
            armed.observer.stop()
            armed.observer.join(timeout=5)
            armed.observer = None

    def stop(self) -> None:
        for armed in self.armed:
            self._stop(armed)
