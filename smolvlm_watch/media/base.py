"""What every decoder shares: the decoded ``Media``, its ``SourceInfo``, ``MediaError``, the
limits a file is held to, and the one safe way to open an input.

Every input is opened exactly once, through ``open_input``: ``O_NONBLOCK`` so that a FIFO or a
device swapped in under a media name cannot block the worker in ``open()``, then ``fstat`` on
the open descriptor (not the name, which may change meanwhile) to insist on a regular file. The
decoders read through that descriptor only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from PIL import Image, ImageOps

# Pillow refuses, at open, any image over twice Image.MAX_IMAGE_PIXELS (~179 MP), whatever
# media.max_pixels says, and names a limit the user cannot set. Every Image.open in these
# decoders is followed by ``check_pixels`` against the configured limit before a pixel is
# decoded, so that key is the one limit: a 200 MP panorama is read once a user raises it.
Image.MAX_IMAGE_PIXELS = None

Kind = Literal["image", "video", "document"]
KINDS: tuple[Kind, ...] = ("image", "video", "document")

HEAD_BYTES = 64  # what the kind is decided from

# File name extensions a watch considers (content still decides what a file is).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
                              ".heic", ".heif", ".hif", ".avif"})
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".dng", ".pef", ".srw"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
DOCUMENT_EXTENSIONS = frozenset({".pdf"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS | VIDEO_EXTENSIONS | DOCUMENT_EXTENSIONS


class MediaError(Exception):
    """A file that cannot be read as media. ``transient`` errors (locked, vanished mid-read) may
    succeed on a later attempt; the others never will without a change to the file."""

    def __init__(self, path: Path | str, reason: str, transient: bool = False):
        self.path = str(path)
        self.reason = reason
        self.transient = transient
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Limits:
    """What an input is held to: guards against decompression bombs and absurd files."""

    max_pixels: int = 100_000_000
    max_bytes: int = 4 * 1024**3
    dpi: int = 200  # documents: PDF rendering resolution
    max_pages: int = 1000
    max_page_pixels: int = 60_000_000


def check_pixels(path: Path, width: int, height: int, limit: int, what: str = "image is",
                 key: str = "media.max_pixels", fix: str = "raise it in the config if this is intended") -> None:
    """Refuse a declared size over ``limit`` (the config's ``key``) before anything is decoded."""
    if width * height > limit:
        raise MediaError(path, f"{what} {width}x{height} = {width * height} pixels, over the {key} "
                               f"limit of {limit} ({fix})")


@dataclass(frozen=True)
class SourceInfo:
    """What the sidecar's ``source`` records about the input file."""

    path: str
    size: int
    mtime: float
    sha256: str
    kind: Kind
    width: int
    height: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        base = {"path": self.path, "size": self.size, "mtime": self.mtime, "sha256": self.sha256,
                "kind": self.kind, "width": self.width, "height": self.height}
        return {**base, **self.extra}


@dataclass(frozen=True)
class Media:
    """A decoded input: its source info and the images tasks look at (one for a photo, the
    sampled frames of a video, one or a few pages of a document)."""

    info: SourceInfo
    images: tuple[Image.Image, ...]
    sidecar_extra: dict[str, Any] = field(default_factory=dict)  # top-level sidecar sections of this kind
    clip: Any = None  # a video's sampled frames and timing (media.video.Clip)

    @property
    def kind(self) -> Kind:
        return self.info.kind


def open_input(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """The file opened for reading, and its status, refusing anything but a regular file
    without ever blocking. Every failure is a MediaError that says what to do."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MediaError(path, "file vanished before it could be read") from None
    except PermissionError:
        raise MediaError(path, "permission denied: the daemon's user cannot read this file") from None
    except OSError as exc:
        raise MediaError(path, f"cannot open file: {exc.strerror or exc}",
                         transient=exc.errno in (errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise MediaError(path, f"not a regular file ({_file_type(st.st_mode)})")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb"), st


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


UNDECODABLE = "cannot decode this "


def undecodable(path: Path, fmt: str, why: str, fix: str) -> MediaError:
    """A file whose format is known but that nothing here decodes (a HEIC without pillow-heif, a
    RAW LibRaw rejects). Worded one way so ``status`` can count these per extension: a library
    of 312 HEICs nobody can read is one line there, not 312 lines of errors."""
    return MediaError(path, f"{UNDECODABLE}{fmt}: {why} ({fix})")


def is_undecodable(error: str | None) -> bool:
    """Whether a recorded error is one of ``undecodable``'s."""
    return bool(error) and str(error).startswith(UNDECODABLE)


def broken(path: Path, what: str, exc: BaseException) -> MediaError:
    """What a decoder raised on a file it could not read, as the file's error. Pillow and the
    other decoders raise all sorts on damaged input (OSError, but also TypeError, KeyError,
    struct.error, ...): none of them is a bug of ours, all of them mean the file is broken."""
    if isinstance(exc, MediaError):
        return exc
    detail = str(exc) if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)) else \
        f"{type(exc).__name__}: {exc}"
    return MediaError(path, f"{what}: {detail}")


def frame_count(img: Image.Image, path: Path) -> int:
    """How many frames (TIFF pages) the file holds; counting walks every IFD, which a damaged
    file makes Pillow fail in any way it likes."""
    try:
        return int(getattr(img, "n_frames", 1))
    except Exception as exc:  # noqa: BLE001 - counting walks every IFD of a damaged file
        raise broken(path, "corrupt or truncated image", exc) from None


def check_size(path: Path, size: int, limits: Limits) -> None:
    if size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if size >= limits.max_bytes:
        raise MediaError(path, f"file is {size} bytes, at or over the media.max_bytes limit of {limits.max_bytes}")


def sha256_of(f: BinaryIO, chunk: int = 1 << 20) -> str:
    """The content hash of an open file, read from its start; the position is left at 0."""
    h = hashlib.sha256()
    f.seek(0)
    while block := f.read(chunk):
        h.update(block)
    f.seek(0)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """The content hash of a file, opened as every input is (see ``open_input``)."""
    f, _ = open_input(path)
    with f:
        return sha256_of(f)


def upright_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, transparency composited on white, RGB: what the model sees."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def source_info(path: Path, st: os.stat_result, sha256: str, kind: Kind, width: int, height: int,
                **extra: Any) -> SourceInfo:
    return SourceInfo(path=str(path), size=st.st_size, mtime=st.st_mtime, sha256=sha256, kind=kind,
                      width=width, height=height, extra=extra)
