"""Reading media files into upright RGB images, with a clear error for everything that is not one.

The kind of a file is decided by its bytes, never its name: a PNG called ``.jpg`` is a PNG, and
a text file called ``.jpg`` is an error that says so. Pixel and byte limits guard the daemon
against decompression bombs and absurd inputs.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO"}

# Magic numbers of the containers this project reads, first bytes of the file.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")


class MediaError(Exception):
    """A file that cannot be read as media. ``transient`` errors (locked, vanished mid-read) may
    succeed on a later attempt; the others never will without a change to the file."""

    def __init__(self, path: Path | str, reason: str, transient: bool = False):
        self.path = str(path)
        self.reason = reason
        self.transient = transient
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class SourceInfo:
    """What the sidecar's ``source`` records about the input file."""

    path: str
    size: int
    mtime: float
    sha256: str
    kind: str
    width: int
    height: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        base = {"path": self.path, "size": self.size, "mtime": self.mtime, "sha256": self.sha256,
                "kind": self.kind, "width": self.width, "height": self.height}
        return {**base, **self.extra}


@dataclass(frozen=True)
class Media:
    """A decoded input: its source info and the images tasks look at (one for a photo)."""

    info: SourceInfo
    images: tuple[Image.Image, ...]
    sidecar_extra: dict[str, Any] = field(default_factory=dict)  # top-level sidecar sections of this kind
    clip: Any = None  # a video's sampled frames and timing (video.Clip)

    @property
    def kind(self) -> str:
        return self.info.kind


def sniff(head: bytes) -> str | None:
    """The media kind these leading bytes announce, or None for anything else."""
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read(path: Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    try:
        st = path.stat()
        if not path.is_file():
            raise MediaError(path, "not a regular file")
        if st.st_size == 0:
            raise MediaError(path, "empty file (0 bytes)")
        if st.st_size > max_bytes:
            raise MediaError(path, f"file is {st.st_size} bytes, over the media.max_bytes limit of {max_bytes}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise MediaError(path, "file vanished before it could be read", transient=False) from None
    except PermissionError:
        raise MediaError(path, "permission denied: the daemon's user cannot read this file") from None
    except OSError as exc:
        raise MediaError(path, f"cannot read file: {exc.strerror or exc}", transient=True) from None
    return data, st


def upright_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, transparency composited on white, RGB: what the model sees."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str | Path, max_pixels: int = 100_000_000, max_bytes: int = 4 * 1024**3,
               sha256: str | None = None) -> Media:
    """Decode one image file (first frame of an animation) with its source info."""
    path = Path(path)
    data, st = _read(path, max_bytes)
    if sniff(data[:16]) != "image":
        raise MediaError(path, f"not a supported image or video (content starts with {data[:8]!r}; "
                               f"supported: {', '.join(sorted(IMAGE_FORMATS - {'MPO'}))}, mp4, mov, mkv, webm, avi)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in IMAGE_FORMATS:
                raise MediaError(path, f"unsupported image format {img.format}")
            w, h = img.size
            if w * h > max_pixels:
                raise MediaError(path, f"image is {w}x{h} = {w * h} pixels, over the media.max_pixels "
                                       f"limit of {max_pixels} (raise it in the config if this is intended)")
            img.seek(0)
            img.load()
            rgb = upright_rgb(img)
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"corrupt or truncated image: {exc}") from None
    info = SourceInfo(
        path=str(path), size=st.st_size, mtime=st.st_mtime, sha256=sha256 or hashlib.sha256(data).hexdigest(),
        kind="image", width=rgb.width, height=rgb.height,
    )
    return Media(info=info, images=(rgb,))


def load(path: str | Path, max_pixels: int = 100_000_000, max_bytes: int = 4 * 1024**3,
         sampling: Any = None, sha256: str | None = None) -> Media:
    """Decode any supported media file; the kind comes from its content, never its name.
    ``sha256``: the content hash when the caller already has it (a video is not read twice)."""
    from . import video

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise MediaError(path, "file vanished before it could be read") from None
    except OSError:
        head = b""  # _read reports it properly
    if video.sniff_video(head):
        return video.load_video(path, sampling or video.Sampling(), max_bytes, sha256)
    return load_image(path, max_pixels=max_pixels, max_bytes=max_bytes, sha256=sha256)
