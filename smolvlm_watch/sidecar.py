"""Sidecar files: where they go, what the JSON holds, and how they are written safely.

Every write is atomic (``atomic.atomic_write``: a temp file in the same folder, fsync,
``os.replace``, the replaced file's owner, group and mode kept), so a crash leaves either the
old file or the new one, never half of one. A file smolvlm-watch did not write is never
overwritten: the JSON sidecar records the hash of every file a run wrote, and a writer refuses a
target that exists without such a record.

One run's files are a write set, committed so that a crash between any two renames leaves a
state the next run recognises as its own (``WriteSet.commit``): writers only stage their files;
then, when a file other than the JSON changes, the JSON is first rewritten to list, under
``pending_outputs``, every hash each name may hold until the set is done; then the other files
are written (and outputs this run no longer produces, still holding our bytes, are removed); the
final JSON comes last. A sidecar that still carries ``pending_outputs`` marks an unfinished set:
the next run redoes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from . import jsontext
from .atomic import DEFAULT_MODE, atomic_write, sweep_once
from .config import OutputConfig

SCHEMA = 1
GENERATOR = "smolvlm-watch"
PENDING = "pending_outputs"  # in a JSON sidecar: a write set that did not finish (see WriteSet)


log = structlog.get_logger("smolvlm_watch.sidecar")


class SidecarError(Exception):
    """A sidecar could not be written or read; the message names the file and the fix."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_CORE = ("schema", "generator", "source", "model", "tasks", "created", "outputs", PENDING)


@dataclass(frozen=True)
class SidecarRecord:
    """Everything known about one processed file; the JSON sidecar is its direct rendering."""

    source: dict[str, Any]
    model: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    outputs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict, compare=False)  # role -> the task filling it (not written)

    def as_json(self) -> dict[str, Any]:
        doc = {"schema": SCHEMA, "generator": GENERATOR, "source": self.source, "model": self.model,
               "tasks": self.tasks, "created": self.created}
        doc.update(self.extra)
        if self.outputs:
            doc["outputs"] = self.outputs
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], source: dict[str, Any]) -> SidecarRecord:
        """The record a sidecar holds, with ``source`` fields brought up to date (a file moved
        along with its sidecars keeps its results, under its new path)."""
        extra = {k: v for k, v in doc.items() if k not in _CORE}
        return cls(source={**(doc.get("source") or {}), **source}, model=doc.get("model") or {},
                   tasks=dict(doc.get("tasks") or {}), created=doc.get("created") or "", extra=extra)

    def stub(self) -> dict[str, Any]:
        """The sidecar of a file with no results yet: what an unfinished first write set's
        intent is written over."""
        return SidecarRecord(source=self.source, model=self.model, tasks={}, created=self.created).as_json()

    def result(self, task: str) -> Any:
        """A task's result, or None when it did not run or failed."""
        entry = self.tasks.get(task) or {}
        return entry.get("result")

    def by_role(self, role: str) -> Any:
        """The result of the task that fills ``role`` (``Task.role``: "description", "keywords",
        "text"), or None: what writers ask for, so a third-party task feeds them as a built-in does."""
        task = self.roles.get(role)
        return self.result(task) if task is not None else None


def render_json(record: SidecarRecord) -> bytes:
    return render_doc(record.as_json())


def render_doc(doc: dict[str, Any]) -> bytes:
    """A sidecar document as UTF-8 JSON (non-ASCII text stays readable, not ``\\u`` escapes)."""
    return (jsontext.dumps(doc, indent=2) + "\n").encode("utf-8")


class WriteSet:
    """The files one run stages for one input, committed in an order a crash cannot corrupt
    (see the module's docstring). ``previous`` holds, per file name, the hashes of our own
    bytes that may be there now: what the JSON sidecar recorded, plus an unfinished set's."""

    def __init__(self, previous: dict[str, set[str]] | None = None, mode: int = DEFAULT_MODE):
        self.previous = previous or {}
        self.mode = mode  # of files this set creates (a replaced file keeps its own)
        self.staged: dict[Path, bytes] = {}
        self.kept: dict[Path, str] = {}  # our files a person edited since: left alone, still recorded

    @classmethod
    def after(cls, doc: dict[str, Any] | None, mode: int = DEFAULT_MODE) -> WriteSet:
        """A write set replacing what the sidecar ``doc`` (ours, or None) says we wrote."""
        previous: dict[str, set[str]] = {}
        for name, digest in ((doc or {}).get("outputs") or {}).items():
            previous.setdefault(name, set()).add(digest)
        for name, digests in ((doc or {}).get(PENDING) or {}).items():
            previous.setdefault(name, set()).update(digests)
        return cls(previous, mode)

    def owned(self, path: Path) -> bool:
        """True when ``path`` is absent, or holds bytes an earlier run of ours wrote there."""
        return not os.path.lexists(path) or self._ours(path)

    def stage(self, path: Path, data: bytes) -> str:
        self.staged[path] = data
        return sha256_bytes(data)

    def edited(self, path: Path) -> bool:
        """Whether ``path`` is a file we wrote that a person has changed since."""
        return path.name in self.previous and os.path.lexists(path) and not self._ours(path)

    def keep(self, path: Path) -> str:
        """Leave a person's edit of our file as it is; the set goes on recording the hash we
        wrote (so the edit stays hers at every later run, and prune keeps it)."""
        digest = sorted(self.previous[path.name])[0]
        self.kept[path] = digest
        log.warning("edited_output_kept", path=str(path), meaning="changed by hand since we wrote it: left as it is")
        return digest

    def commit(self, json_path: Path | None, base: dict[str, Any]) -> dict[str, str]:
        """Write the staged files. ``json_path``: the JSON sidecar among them (None when the
        watch writes none: then nothing records an unfinished set); ``base``: the sidecar the
        intent is written over (the existing one, or a stub). Returns the set, name -> sha256."""
        written = {p.name: sha256_bytes(d) for p, d in self.staged.items()} | {p.name: h for p, h in self.kept.items()}
        for folder in {p.parent for p in self.staged}:
            sweep_once(folder)
        final = self.staged.pop(json_path, None) if json_path is not None else None
        changed = {p: d for p, d in self.staged.items() if not _holds(p, d)}
        removed = [json_path.parent / name for name in self._stale(json_path)] if json_path else []
        if json_path is not None and (changed or removed):
            pending = {p.name: sorted(self.previous.get(p.name, set()) | {sha256_bytes(d)}) for p, d in changed.items()}
            pending.update({p.name: sorted(self.previous.get(p.name, ())) for p in removed})
            atomic_write(json_path, render_doc({**base, PENDING: pending}), self.mode)
        for path, data in changed.items():
            atomic_write(path, data, self.mode)
        for path in removed:
            path.unlink(missing_ok=True)
        if final is not None and json_path is not None:
            atomic_write(json_path, final, self.mode)
        return written

    def _stale(self, json_path: Path) -> list[str]:
        """Outputs an earlier run wrote beside ``json_path`` that this run does not write, still
        holding our bytes (a person's edit is left alone): removed, so no sidecar describes an
        older version of the file."""
        staged = {p.name for p in self.staged} | {p.name for p in self.kept} | {json_path.name}
        return [name for name in sorted(self.previous)
                if name not in staged and self._ours(json_path.parent / name)]

    def _ours(self, path: Path) -> bool:
        try:
            return sha256_bytes(read_regular(path)) in self.previous.get(path.name, ())
        except (FileNotFoundError, SidecarError):
            return False


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` already holds exactly ``data`` (then it is not rewritten)."""
    try:
        return read_regular(path) == data
    except (FileNotFoundError, SidecarError):
        return False


def read_regular(path: Path) -> bytes:
    """A sidecar-side file's bytes; SidecarError for anything but a regular file (a FIFO at a
    sidecar's name must not block the worker)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SidecarError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise SidecarError(f"{path} exists and is not a regular file; it is left alone: move it away")
        return f.read()


@dataclass(frozen=True)
class Target:
    """Where one input's sidecars go; writers stage their files through it (``write_text``,
    ``write_bytes``), and the pipeline commits them as one write set."""

    media: Path
    folder: Path
    output: OutputConfig
    writes: WriteSet = field(default_factory=WriteSet, compare=False)

    @classmethod
    def for_media(cls, media: Path, output: OutputConfig, watch_root: Path | None = None) -> Target:
        """Beside the media, or under ``output_dir`` mirroring the path below the watch root."""
        media = Path(media)
        if output.output_dir is None:
            return cls(media=media, folder=media.parent, output=output)
        root = watch_root or media.parent
        try:
            rel = media.parent.resolve().relative_to(root.resolve())
        except ValueError:
            rel = Path()
        return cls(media=media, folder=output.output_dir / rel, output=output)

    def path(self, suffix: str, replace_extension: bool = False) -> Path:
        base = self.media.stem if replace_extension else self.media.name
        return self.folder / f"{base}{suffix}"

    @property
    def json_name(self) -> str:
        return self.media.name + self.output.json_suffix

    @property
    def json_path(self) -> Path:
        return self.folder / self.json_name

    def name_problem(self) -> str | None:
        """Why this file's sidecars cannot be named after it (too long for the file system),
        or None. Permanent: no retry makes a name shorter."""
        try:
            limit = os.pathconf(self.folder if self.folder.is_dir() else "/", "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        for path in (self.json_path, self.path(self.output.ocr_suffix)):
            size = len(os.fsencode(path.name))
            if size > limit:
                return (f"the sidecar name {path.name[:40]}…{path.name[-20:]} would be {size} bytes, over this file "
                        f"system's limit of {limit}: shorten the file's name (its sidecars are named after it)")
        return None

    def owned(self, path: Path) -> bool:
        """True when ``path`` is absent, or holds bytes an earlier run of ours wrote there."""
        return self.writes.owned(path)

    def write_text(self, path: Path, text: str) -> str:
        """Stage ``text`` (UTF-8) for ``path``; returns its sha256. A file of ours a person has
        edited since is kept as it is (her correction of the OCR wins; the rest of the set is
        still written); a name shared with the other file of a pair (``IMG_1.txt``) that it
        wrote is ours too; any other file there is foreign, and the file fails, naming it."""
        if self.writes.edited(path):
            return self.writes.keep(path)
        if not self.owned(path) and not self._twin_wrote(path):
            raise SidecarError(f"{path} exists and was not written by smolvlm-watch; it is left alone: move it "
                               "away, or choose another suffix in the config")
        return self.writes.stage(path, text.encode("utf-8"))

    def _twin_wrote(self, path: Path) -> bool:
        """Whether a stem-named output (``IMG_1.txt``) holds what the sidecar of another file with
        this stem (``IMG_1.DNG`` beside ``IMG_1.JPG``) records it wrote there."""
        if path.name.startswith(self.media.name):
            return False
        try:
            digest = sha256_bytes(read_regular(path))
        except (FileNotFoundError, SidecarError):
            return False
        for twin in self.folder.glob(glob.escape(self.media.stem) + ".*" + self.output.json_suffix):
            try:
                doc = read_json(twin) if twin != self.json_path else None
            except SidecarError:
                continue
            if doc is not None and (doc.get("outputs") or {}).get(path.name) == digest:
                return True
        return False

    def write_bytes(self, path: Path, data: bytes) -> str:
        """Stage ``data`` for ``path`` as it is: for a writer that merged the file's existing
        content into ``data`` itself (XMP), so there is nothing of anyone's to refuse."""
        return self.writes.stage(path, data)


@contextlib.contextmanager
def writing(media: Path) -> Iterator[None]:
    """The writers of one file's sidecar set take turns, in any process (the daemon, a
    ``process`` run beside it): an advisory ``flock`` on the media file itself, held while the
    sidecar is read as it is now and the set is written (never while the model runs). Where the
    file system has no flock, or the file is gone, there is nothing to hold."""
    try:
        fd = os.open(media, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


def current(record: SidecarRecord, on_disk: dict[str, Any] | None, ran: Iterable[str]) -> SidecarRecord:
    """``record`` with what another writer put in the sidecar since we read it: its entries for
    the tasks we did not run now, when it describes the same content and is complete. Ours win
    for what we ran; nothing of the other run is lost."""
    if on_disk is None or PENDING in on_disk or (on_disk.get("source") or {}).get("sha256") != record.source.get(
            "sha256"):
        return record
    done = set(ran)
    return replace(record, tasks={**record.tasks, **{k: v for k, v in on_disk["tasks"].items() if k not in done}})


def read_json(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path`` if it is ours; None when absent; SidecarError when it is not ours."""
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("generator") != GENERATOR or not isinstance(doc.get("tasks"), dict):
        raise SidecarError(f"{path} exists and is not a smolvlm-watch sidecar; it is left alone: "
                           "move it away, or set outputs.json_suffix to another suffix")
    return doc


class Writer:
    """Base class for output writers (see the ``register_writers`` hook)."""

    name: str = ""
    version: str = "1"
    description: str = ""
    merges: tuple[str, ...] = ()  # suffixes of files this writer merges into rather than owns (".xmp")

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        """Write this writer's files; return each path written with its sha256."""
        raise NotImplementedError

    def unmerge(self, data: bytes) -> bytes | None:
        """For a file named by ``merges``: its ``data`` with our part taken out, or None when
        nothing else is left and the file may be removed (``prune``)."""
        return None


def missing_output(target: Target, recorded: dict[str, str] | None, writes_json: bool) -> str | None:
    """The first file of a done job's sidecar set that is no longer there (deleted by hand, a
    backup restored without its sidecars), or None. One lstat per file: cheap enough for every
    rescan. A job recorded before sets were kept in the journal is checked for its JSON."""
    names = list(recorded) if recorded else ([target.json_name] if writes_json else [])
    folder = str(target.folder)  # joined as strings: a rescan asks this of every done file
    for name in names:
        if not os.path.lexists(os.path.join(folder, name)):
            return name
    return None


def orphaned(target: Target, recorded: dict[str, str] | None, media: str) -> dict[Path, bool]:
    """The sidecar files a vanished file left behind, each with whether it still holds the bytes
    we wrote (only those may be removed: an XMP a photo manager has edited since is not ours
    alone any more). ``recorded``: the set the journal kept; for a job recorded before sets
    were kept, the JSON sidecar says what we wrote, when it describes this very path."""
    if recorded is None:
        try:
            doc = read_json(target.json_path)
            raw = read_regular(target.json_path)
        except (FileNotFoundError, SidecarError):
            return {}
        if doc is None or (doc.get("source") or {}).get("path") != media:
            return {}
        recorded = {**(doc.get("outputs") or {}), target.json_path.name: sha256_bytes(raw)}
    found = {}
    for name, digest in recorded.items():
        path = target.folder / name
        try:
            found[path] = sha256_bytes(read_regular(path)) == digest
        except (FileNotFoundError, SidecarError):
            continue
    return found


def _renamed(name: str, old: Path, new: Path) -> str:
    """An output's name for the new media name: outputs are ``{name}{suffix}`` or ``{stem}{suffix}``."""
    if name.startswith(old.name):
        return new.name + name[len(old.name):]
    if name.startswith(old.stem):
        return new.stem + name[len(old.stem):]
    return name


def relocate(old: Target, new: Target, source: dict[str, Any]) -> dict[str, str]:  # source: updated fields
    """Move a renamed file's sidecars along with it instead of running the model again.

    Every output the old JSON sidecar records (and still holds our bytes) is moved to the new
    name, then the JSON is rewritten with the new ``source`` and removed from the old place.
    Returns the new set (name -> sha256); empty when there was nothing of ours to move.
    """
    doc = read_json(old.json_path)
    if doc is None or PENDING in doc or os.path.lexists(new.json_path):
        return {}  # nothing of ours, an unfinished set (redone instead), or the new name has its own
    moved: dict[str, str] = {}
    for name, digest in (doc.get("outputs") or {}).items():
        src = old.folder / name
        dst = new.folder / _renamed(name, old.media, new.media)
        if not WriteSet({name: {digest}})._ours(src) or os.path.lexists(dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        moved[dst.name] = digest
    doc["source"] = {**(doc.get("source") or {}), **source}
    doc["outputs"] = moved
    data = render_doc(doc)
    atomic_write(new.json_path, data, new.output.mode)
    old.json_path.unlink(missing_ok=True)
    return {**moved, new.json_path.name: sha256_bytes(data)}
