"""Opening inputs: the one place a file's kind is decided, by its content, never its name.

``open_media`` opens the file once (``base.open_input``: a FIFO or device swapped in is refused
without blocking), reads a bounded head, and picks the decoder: a PNG called ``.jpg`` is a PNG,
a text file called ``.jpg`` is an error that says so, and a 4 GiB file of zeros is refused
after 64 bytes. A TIFF is a document when it holds more than one page. The returned ``Opened``
reads through that same descriptor: the content hash, then the decoder the kind calls for.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from . import document, image, raw, video
from .capture import Capture
from .base import (HEAD_BYTES, KINDS, MEDIA_EXTENSIONS, RAW_EXTENSIONS, Kind, Limits, Media, MediaError, SourceInfo,
                   check_size, frame_count, is_undecodable, open_input, sha256_file, sha256_of, source_info,
                   undecodable)
from .document import Document
from .video import Sampling

__all__ = ["KINDS", "MEDIA_EXTENSIONS", "Document", "Kind", "Limits", "Media", "MediaError", "Opened", "Sampling",
           "SourceInfo", "is_undecodable", "load", "open_media", "sha256_file"]

SUPPORTED = f"supported: {image.SUPPORTED}, camera RAW, mp4, mov, mkv, webm, avi, PDF"


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

    @property
    def decoder(self) -> str:
        """What decodes this file here (``explain`` shows it)."""
        if self.format == "RAW":
            return raw.DECODER or "none: rawpy (LibRaw) is not installed"
        if self.kind == "video":
            return video.DECODER
        if self.format == "pdf":
            return document.PDF_DECODER
        return image.decoder_name(self.format)

    @property
    def pair(self) -> Path | None:
        """A RAW's JPEG (or HEIF) twin, when the camera wrote one."""
        return raw.pair_of(self.path) if self.format == "RAW" else None

    def image(self, limits: Limits, edge: int | None = None, pair: bool = False) -> Media:
        """The photo, upright RGB; ``edge``: the longest edge the model looks at (a camera-size
        JPEG and a RAW are decoded no larger than they need to be). ``pair``: a RAW with a twin
        is seen through the twin's pixels (``raw_pairs: prefer-jpeg``), so both get the same
        answers; its source still records the RAW and says ``decoded: pair``."""
        if self.format == "RAW":
            twin = self.pair if pair else None
            if twin is not None:
                try:
                    return self._through(twin, limits, edge)
                except MediaError as exc:  # the twin is broken: the RAW speaks for itself, and says why
                    own = raw.decode(self.file, self.path, self.stat, self.sha256, limits, edge)
                    extra = {**own.info.extra, "pair_unreadable": f"{twin.name}: {exc.reason}"}
                    return replace(own, info=replace(own.info, extra=extra))
            return raw.decode(self.file, self.path, self.stat, self.sha256, limits, edge)
        img = self._pillow or image.open_pillow(self.file, self.path, limits.max_pixels)
        return image.decode(img, self.file, self.path, self.stat, self.sha256, edge)

    def _through(self, twin: Path, limits: Limits, edge: int | None) -> Media:
        width, height = raw.upright_size(self.file, self.path)
        with open_media(twin, limits) as opened:
            if opened.kind != "image" or opened.format == "RAW":
                raise MediaError(twin, "not a photo")
            seen = opened.image(limits, edge)
        info = source_info(self.path, self.stat, self.sha256, "image", width, height, decoded="pair",
                           pair=twin.name)
        return Media(info=info, images=seen.images)

    def capture(self) -> Capture | None:
        """What the file says of its taking, from its header or container (no pixel decoded);
        None for a document."""
        if self.kind == "video":
            return video.capture_of(self.file, self.path)
        if self.format == "RAW":
            return raw.captured(self.file, self.path)
        if self.kind != "image":
            return None
        try:
            return image.captured(self._pillow or image.open_pillow(self.file, self.path, None))
        except MediaError as exc:  # a header Pillow cannot read: decoding will fail it with the reason
            return Capture(notes=(exc.reason,))

    def video(self, sampling: Sampling) -> Media:
        return video.load_video(self.file, self.path, self.stat, self.sha256, sampling)

    def frame(self, t: float) -> Image.Image:
        """The video's frame at ``t`` seconds (a preview), upright."""
        return video.frame_at(self.file, self.path, t)

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
        return _classify(path, f, st, head, sha256, limits)
    except BaseException:
        f.close()
        raise


def _classify(path: Path, f: BinaryIO, st: os.stat_result, head: bytes, sha256: str | None,
              limits: Limits) -> Opened:
    """The kind and format from the content: formats that announce themselves first, then the
    TIFF family (a page, a scanned document, or a RAW that looks like a TIFF)."""
    if document.sniff(head):
        return Opened(path, f, st, "document", "pdf", sha256=sha256)
    if raw.sniff(head):
        return Opened(path, f, st, "image", "RAW", sha256=sha256)
    brand = image.still_brand(head)
    if brand == "heif" and image.HEIF_DECODER is None:
        raise undecodable(path, "HEIC/HEIF photo", "pillow-heif is not installed", "fix: pip install pillow-heif")
    if brand == "avif" and not image.AVIF_OK:
        raise undecodable(path, "AVIF photo", f"this Pillow {Image.__version__} was built without AVIF",
                          "fix: pip install 'pillow>=11.3'")
    if brand is None and video.sniff(head):
        return Opened(path, f, st, "video", "video", sha256=sha256)
    if image.sniff(head):
        try:
            pillow = image.open_pillow(f, path, limits.max_pixels)
        except MediaError:
            if head.startswith(raw.TIFF_MAGIC) and raw.opens(f, path):  # a DNG whose IFD0 Pillow cannot read
                return Opened(path, f, st, "image", "RAW", sha256=sha256)
            raise
        if pillow.format == "TIFF" and raw.tiff_is_raw(getattr(pillow, "tag_v2", {}), path, RAW_EXTENSIONS):
            return Opened(path, f, st, "image", "RAW", sha256=sha256)
        if pillow.format == "TIFF" and frame_count(pillow, path) > 1:
            return Opened(path, f, st, "document", "tiff", pillow, sha256)
        return Opened(path, f, st, "image", pillow.format or "image", pillow, sha256)
    raise MediaError(path, f"not a supported image or video, nor a PDF (content starts with {head[:8]!r}; {SUPPORTED})")


def embedded(path: Path) -> image.Embedded:
    """What an image file already carries about itself (description, keywords, its XMP)."""
    try:
        f, _ = open_input(Path(path))
    except MediaError:
        return image.Embedded()
    with f:
        return image.embedded(f, Path(path))


def load(path: Path, limits: Limits = Limits(), sampling: Sampling | None = None) -> Media:
    """Decode an image or a video in one call (documents are read page by page: ``Opened.document``)."""
    with open_media(path, limits) as opened:
        if opened.kind == "video":
            return opened.video(sampling or Sampling())
        if opened.kind == "document":
            raise MediaError(path, "a document (PDF or multi-page TIFF): read it page by page")
        return opened.image(limits)
