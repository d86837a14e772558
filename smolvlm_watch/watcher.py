"""Finding the files to process: the filter and the folder scan.

The filter decides what counts as input (media extensions, default ignores merged with the
watch's include/exclude globs, never our own sidecars or temp files); the scan walks a watch
without descending into excluded folders. The live observer builds on both.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterator

from .config import WatchConfig
from .sidecar import TEMP_PREFIX

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}
DOCUMENT_EXTENSIONS = {".pdf"}
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | DOCUMENT_EXTENSIONS

DEFAULT_IGNORED_FILES = (
    ".DS_Store", "._*", "Thumbs.db", "desktop.ini", "*.part", "*.crdownload", "*.tmp", "~$*",
    ".syncthing.*.tmp", f"{TEMP_PREFIX}*", "*.smolvlm.json", "*.xmp",
)
DEFAULT_IGNORED_DIRS = ("@eaDir", ".stfolder", ".stversions", ".Trashes", "__MACOSX")


class MediaFilter:
    """What a watch takes as input. Hidden files and folders are always ignored."""

    def __init__(self, watch: WatchConfig):
        self.root = watch.path
        self.include = watch.include
        self.exclude = watch.exclude
        self.recursive = watch.recursive
        self.output_dir = watch.output.output_dir.resolve() if watch.output.output_dir else None
        self.json_suffix = watch.output.json_suffix

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

    def accepts(self, path: Path) -> bool:
        """Whether a file is input for this watch (by name alone; content is checked on decode)."""
        name = path.name
        if name.startswith(".") or name.endswith(self.json_suffix):
            return False
        if any(fnmatch.fnmatch(name, g) for g in DEFAULT_IGNORED_FILES):
            return False
        if path.suffix.lower() not in MEDIA_EXTENSIONS:
            return False
        rel = self._rel(path)
        if rel is None:
            return False
        parts = rel.split("/")
        if len(parts) > 1 and not self.recursive:
            return False
        parent = self.root
        for part in parts[:-1]:
            parent = parent / part
            if not self.accepts_dir(parent):
                return False
        if self.include and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in self.include):
            return False
        return not self._excluded(rel, name)


def scan(watch: WatchConfig, media_filter: MediaFilter | None = None) -> Iterator[Path]:
    """Every input file below the watch's folder, sorted per folder, excluded folders pruned."""
    f = media_filter or MediaFilter(watch)
    for folder, dirs, files in os.walk(watch.path):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if watch.recursive and f.accepts_dir(here / d))
        for name in sorted(files):
            path = here / name
            if f.accepts(path) and path.is_file():
                yield path
