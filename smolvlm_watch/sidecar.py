"""Sidecar files: where they go, what the JSON holds, and how they are written safely.

Every write is atomic (a temp file in the same folder, fsync, ``os.replace``), so a crash leaves
either the old file or the new one, never half of one. A file smolvlm-watch did not write is never
overwritten: the JSON sidecar records the hash of every file a run wrote, and a writer refuses a
target that exists without such a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import OutputConfig

SCHEMA = 1
GENERATOR = "smolvlm-watch"
TEMP_PREFIX = ".smolvlm-tmp-"


class SidecarError(Exception):
    """A sidecar could not be written or read; the message names the file and the fix."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SidecarRecord:
    """Everything known about one processed file; the JSON sidecar is its direct rendering."""

    source: dict[str, Any]
    model: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    outputs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc = {"schema": SCHEMA, "generator": GENERATOR, "source": self.source, "model": self.model,
               "tasks": self.tasks, "created": self.created}
        doc.update(self.extra)
        if self.outputs:
            doc["outputs"] = self.outputs
        return doc

    def result(self, task: str) -> Any:
        """A task's result, or None when it did not run or failed."""
        entry = self.tasks.get(task) or {}
        return entry.get("result")


def render_json(record: SidecarRecord) -> bytes:
    return (json.dumps(record.as_json(), ensure_ascii=False, indent=2) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Target:
    """Where one input's sidecars go, and which files the previous run wrote (name → sha256)."""

    media: Path
    folder: Path
    output: OutputConfig
    previous_outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_media(cls, media: Path, output: OutputConfig, watch_root: Path | None = None) -> "Target":
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
    def json_path(self) -> Path:
        return self.path(self.output.json_suffix)

    def owned(self, path: Path) -> bool:
        """True when ``path`` is absent, or is exactly what an earlier run of ours wrote there."""
        if not path.exists():
            return True
        recorded = self.previous_outputs.get(path.name)
        return recorded is not None and recorded == sha256_bytes(path.read_bytes())

    def write_text(self, path: Path, text: str) -> str:
        """Atomically write ``text`` (UTF-8) unless a foreign file is there; returns its sha256."""
        if not self.owned(path):
            raise SidecarError(f"{path} exists and was not written by smolvlm-watch (or was edited since); "
                               "it is left alone: move it away, or choose another suffix in the config")
        data = text.encode("utf-8")
        atomic_write(path, data)
        return sha256_bytes(data)


def read_json(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path`` if it is ours; None when absent; SidecarError when it is not ours."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"{path}: cannot read existing sidecar: {exc.strerror or exc}") from None
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

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        """Write this writer's files; return each path written with its sha256."""
        raise NotImplementedError


def _renamed(name: str, old: Path, new: Path) -> str:
    """An output's name for the new media name: outputs are ``{name}{suffix}`` or ``{stem}{suffix}``."""
    if name.startswith(old.name):
        return new.name + name[len(old.name):]
    if name.startswith(old.stem):
        return new.stem + name[len(old.stem):]
    return name


def relocate(old: Target, new: Target, source: dict[str, Any]) -> list[Path]:  # source: updated fields
    """Move a renamed file's sidecars along with it instead of running the model again.

    Every output the old JSON sidecar records (and still holds our bytes) is moved to the new
    name, then the JSON is rewritten with the new ``source`` and removed from the old place.
    Returns the new paths; an empty list when there was nothing of ours to move.
    """
    doc = read_json(old.json_path)
    if doc is None or new.json_path.exists():
        return []
    moved: dict[str, str] = {}
    placed = []
    for name, digest in (doc.get("outputs") or {}).items():
        src = old.folder / name
        dst = new.folder / _renamed(name, old.media, new.media)
        if not src.exists() or sha256_bytes(src.read_bytes()) != digest or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        moved[dst.name] = digest
        placed.append(dst)
    doc["source"] = {**(doc.get("source") or {}), **source}
    doc["outputs"] = moved
    atomic_write(new.json_path, (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    old.json_path.unlink(missing_ok=True)
    return [new.json_path] + placed
