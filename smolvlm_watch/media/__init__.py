"""Opening inputs: the one place a file's kind is decided, by its content, never its name.

``open_media`` opens the file once (``base.open_input``: a FIFO or device swapped in is refused
without blocking), reads a bounded head, and picks the decoder: a PNG called ``.jpg`` is a PNG,
a text file called ``.jpg`` is an error that says so, and a 4 GiB file of zeros is refused
after 64 bytes. A TIFF is a document when it holds more than one page. The returned ``Opened``
reads through that same descriptor: the content hash, then the decoder the kind calls for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from . import document, image, video
from .base import (HEAD_BYTES, KINDS, MEDIA_EXTENSIONS, Kind, Limits, Media, MediaError, SourceInfo, check_size,
                   frame_count, open_input, sha256_file, sha256_of)
from .document import Document
from .video import Sampling

__all__ = ["KINDS", "MEDIA_EXTENSIONS", "Document", "Kind", "Limits", "Media", "MediaError", "Opened", "Sampling",
           "SourceInfo", "load", "open_media", "sha256_file"]

SUPPORTED = f"supported: {image.SUPPORTED}, mp4, mov, mkv, webm, avi, PDF"


class Opened:
    """An input opened and classified; decode it with the method its ``kind`` names. Close it
    (or use it as a context manager) when the file's work is done."""

    def __init__(self, path: Path, f: BinaryIO, st: os.stat_result, kind: Kind, fmt: str,
                 pillow: Image.Image | None = None, sha256: str | None = None):
        self.path, self.file, self.stat, self.kind, self.format = path, f, st, kind, fmt
        self._pillow = pillow
        self._sha256 = sha256

    @property
    def sha256(self) -> str:
        """The content hash, read through the open file once (or the caller's, when it had one)."""
        if self._sha256 is None:
            self._sha256 = sha256_of(self.file)
        return self._sha256

    def image(self, limits: Limits) -> Media:
        img = self._pillow or image.open_pillow(self.file, self.path)
        return image.decode(img, self.path, self.stat, self.sha256, limits)

    def video(self, sampling: Sampling) -> Media:
        return video.load_video(self.file, self.path, self.stat, self.sha256, sampling)

    def document(self, limits: Limits) -> Document:
        return Document(self.file, limits, self.path, tiff=self._pillow)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_media(path: Path, limits: Limits = Limits(), sha256: str | None = None) -> Opened:
    """The input opened, size-checked and classified by its first bytes; a MediaError for
    anything that is not a supported image, video or document."""
    path = Path(path)
    f, st = open_input(path)
    try:
        check_size(path, st.st_size, limits)
        head = f.read(HEAD_BYTES)
        return _classify(path, f, st, head, sha256)
    except BaseException:
        f.close()
        raise


def _classify(path: Path, f: BinaryIO, st: os.stat_result, head: bytes, sha256: str | None) -> Opened:
    if document.sniff(head):
        return Opened(path, f, st, "document", "pdf", sha256=sha256)
    if video.sniff(head):
        return Opened(path, f, st, "video", "video", sha256=sha256)
    if image.sniff(head):
        pillow = image.open_pillow(f, path)
        if pillow.format == "TIFF" and frame_count(pillow, path) > 1:
            return Opened(path, f, st, "document", "tiff", pillow, sha256)
        return Opened(path, f, st, "image", pillow.format or "image", pillow, sha256)
    raise MediaError(path, f"not a supported image or video, nor a PDF (content starts with {head[:8]!r}; {SUPPORTED})")


def load(path: Path, limits: Limits = Limits(), sampling: Sampling | None = None) -> Media:
    """Decode an image or a video in one call (documents are read page by page: ``Opened.document``)."""
    with open_media(path, limits) as opened:
        if opened.kind == "video":
            return opened.video(sampling or Sampling())
        if opened.kind == "document":
            raise MediaError(path, "a document (PDF or multi-page TIFF): read it page by page")
        return opened.image(limits)
