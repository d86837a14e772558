"""Still images through Pillow: JPEG, PNG, WebP, GIF (first frame), TIFF (one page) and BMP.

Decoded from the input's open file, never read into memory whole: Pillow reads what the decoder
needs, so a 4 GiB file with a JPEG's magic costs what its header costs until it is refused.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from .base import Limits, Media, MediaError, broken, source_info, upright_rgb

FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO"})
SUPPORTED = "JPEG, PNG, WebP, GIF, TIFF, BMP"

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def sniff(head: bytes) -> bool:
    """Whether these leading bytes announce an image container Pillow reads for us."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


HEADER_BUDGET = 16 * 1024**2  # bytes Pillow may read to parse a header (EXIF, ICC, XMP, previews)


class _Budget(io.RawIOBase):
    """A file Pillow parses a header from, with a byte budget: a JPEG's marker scan reads junk
    one byte at a time, so a JPEG signature followed by 4 GiB of zeros would take minutes
    before failing. Lifted once the header is parsed (``budget = None``)."""

    def __init__(self, f: BinaryIO, path: Path, budget: int):
        self.f, self.path, self.budget = f, path, budget
        self.spent = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        if self.budget is not None:
            self.spent += len(data)
            if self.spent > self.budget:
                raise MediaError(self.path, f"corrupt or truncated image: no image header in the first "
                                            f"{self.budget // 1024**2} MiB")
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def open_pillow(f: BinaryIO, path: Path) -> Image.Image:
    """The file opened by Pillow (header only, within ``HEADER_BUDGET``). A declared size past
    Pillow's own bomb guard is refused as what it is, not as a corrupt file."""
    f.seek(0)
    reader = _Budget(f, path, HEADER_BUDGET)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(reader)  # type: ignore[arg-type]
    except Image.DecompressionBombError as exc:
        raise MediaError(path, f"refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise
        raise broken(path, "corrupt or truncated image", exc) from None
    reader.budget = None  # type: ignore[assignment]
    return img


def check_pixels(path: Path, width: int, height: int, limit: int, what: str = "image") -> None:
    if width * height > limit:
        raise MediaError(path, f"{what} is {width}x{height} = {width * height} pixels, over the media.max_pixels "
                               f"limit of {limit} (raise it in the config if this is intended)")


def decode(img: Image.Image, path: Path, st: os.stat_result, sha256: str, limits: Limits) -> Media:
    """The first frame, upright and RGB, with its source info."""
    if img.format not in FORMATS:
        raise MediaError(path, f"unsupported image format {img.format}")
    check_pixels(path, *img.size, limits.max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.seek(0)
            img.load()
            rgb = upright_rgb(img)
    except Image.DecompressionBombError as exc:
        raise MediaError(path, f"refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise
        raise broken(path, "corrupt or truncated image", exc) from None
    info = source_info(path, st, sha256, "image", rgb.width, rgb.height)
    return Media(info=info, images=(rgb,))
