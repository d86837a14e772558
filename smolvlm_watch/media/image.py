"""Still images through Pillow: JPEG, PNG, WebP, GIF (first frame), TIFF (one page) and BMP.

Decoded from the input's open file, never read into memory whole: Pillow reads what the decoder
needs, so a 4 GiB file with a JPEG's magic costs what its header costs until it is refused.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from .base import Limits, Media, MediaError, source_info, upright_rgb

FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO"})
SUPPORTED = "JPEG, PNG, WebP, GIF, TIFF, BMP"

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def sniff(head: bytes) -> bool:
    """Whether these leading bytes announce an image container Pillow reads for us."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def open_pillow(f: BinaryIO, path: Path) -> Image.Image:
    """The file opened by Pillow (header only). A declared size past Pillow's own bomb guard
    is refused as what it is, not as a corrupt file."""
    f.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(f)
    except Image.DecompressionBombError as exc:
        raise MediaError(path, f"refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(path, f"corrupt or truncated image: {exc}") from None


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
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(path, f"corrupt or truncated image: {exc}") from None
    info = source_info(path, st, sha256, "image", rgb.width, rgb.height)
    return Media(info=info, images=(rgb,))
