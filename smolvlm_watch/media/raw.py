"""Camera RAW through LibRaw (rawpy): CR2, CR3, NEF, ARW, RAF, ORF, RW2, DNG, PEF, SRW.

The model looks at a photo at most ``edge`` pixels long (2048 for SmolVLM2; 512 for one tile),
so a RAW is read from the JPEG preview the camera embedded whenever that preview is at least
that large: no demosaic, a fraction of a second. Otherwise LibRaw demosaics at half size (the
camera's white balance, 8 bits). Either way the camera's orientation is applied, the source
records which way was taken (``decoded``: ``preview`` or ``demosaic``) and the photo's full
size, upright.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from . import capture
from .base import Limits, Media, MediaError, check_pixels, source_info, undecodable, upright_rgb

TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
# LibRaw's flip: 3 = upside down, 5 = turned left, 6 = turned right
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}

try:
    import rawpy

    DECODER: str | None = f"LibRaw {'.'.join(map(str, rawpy.libraw_version))} (rawpy {rawpy.__version__})"
except ImportError:  # pragma: no cover - rawpy is a dependency; a broken install says so
    rawpy = None
    DECODER = None


def sniff(head: bytes) -> bool:
    """RAW formats that announce themselves: Fujifilm RAF, Olympus ORF, Panasonic RW2, Canon CR3
    (ISO base media, brand crx), Canon CR2 (TIFF with "CR" at byte 8). The TIFF-based rest (DNG,
    NEF, ARW, PEF, SRW) are told apart from a TIFF by ``tiff_is_raw``."""
    return (head.startswith(b"FUJIFILMCCD-RAW") or head[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00")
            or (head[4:8] == b"ftyp" and head[8:12] == b"crx ") or (head[:4] == b"II*\x00" and head[8:10] == b"CR"))


# what a camera writes next to its RAW when it shoots RAW+JPEG (Fujifilm and Canon: also HEIF)
PAIR_SUFFIXES = (".jpg", ".JPG", ".jpeg", ".JPEG", ".hif", ".HIF", ".heic", ".HEIC")


def pair_of(path: Path) -> Path | None:
    """The JPEG (or HEIF) the camera wrote with this RAW: same folder, same name up to the
    extension. Asked name by name, never by listing the folder (a folder of 50,000 RAWs)."""
    for suffix in PAIR_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


@contextmanager
def _libraw(f: BinaryIO, path: Path) -> Iterator[Any]:
    """The file opened by LibRaw; whatever LibRaw raises on a damaged or unknown RAW (while
    opening or while the caller reads it) becomes the file's clear refusal."""
    if rawpy is None:
        raise undecodable(path, "camera RAW", "rawpy (LibRaw) is not installed", "fix: pip install rawpy")
    f.seek(0)
    try:
        with rawpy.imread(f) as raw:
            yield raw
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - LibRaw's errors, whatever they are
        raise _rejected(path, exc) from None


def upright_size(f: BinaryIO, path: Path) -> tuple[int, int]:
    """The sensor's size, upright, from the RAW's header (nothing is unpacked)."""
    with _libraw(f, path) as raw:
        width, height, flip = raw.sizes.width, raw.sizes.height, raw.sizes.flip
    return (height, width) if flip in (5, 6) else (width, height)


def opens(f: BinaryIO, path: Path) -> bool:
    """Whether LibRaw reads this file's header: a TIFF-shaped file Pillow refuses (a DNG whose
    first IFD holds the 16-bit mosaic) may still be a RAW."""
    try:
        with _libraw(f, path):
            return True
    except MediaError:  # not a RAW LibRaw knows (or no LibRaw): the caller reports Pillow's refusal
        return False


def tiff_is_raw(tags: Any, path: Path, raw_extensions: frozenset[str]) -> bool:
    """A TIFF-shaped file is a RAW when it says so (DNGVersion), or when its name does (NEF, ARW,
    PEF and SRW carry nothing in their first IFD that a TIFF could not)."""
    return 50706 in tags or path.suffix.lower() in raw_extensions


def decode(f: BinaryIO, path: Path, st: os.stat_result, sha256: str, limits: Limits, edge: int | None) -> Media:
    with _libraw(f, path) as raw:
        width, height, flip = raw.sizes.width, raw.sizes.height, raw.sizes.flip
        check_pixels(path, width, height, limits.max_pixels)
        image, how = _preview(raw, edge, flip, limits.max_pixels) or (_demosaic(raw), "demosaic")
    if flip in (5, 6):
        width, height = height, width
    info = source_info(path, st, sha256, "image", width, height, decoded=how)
    return Media(info=info, images=(image,))


RAW_EXIF_BYTES = 1 << 20  # where a TIFF-based RAW keeps its IFDs: the first megabyte (its pixels follow)


def captured(f: BinaryIO, path: Path) -> capture.Capture:
    """What a TIFF-based RAW (DNG, CR2, NEF, ARW, ORF, PEF, RW2, SRW) records of its taking,
    from the TIFF directories at its start, read by Pillow's EXIF parser (Pillow cannot open
    the mosaic itself). LibRaw hands over the time but not the GPS block; a CR3 or RAF (not
    TIFF inside) records nothing here."""
    f.seek(0)
    head = f.read(RAW_EXIF_BYTES)
    if head[:4] not in TIFF_MAGIC:
        return capture.Capture()
    exif = Image.Exif()
    try:
        exif.load(head)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged directory makes Pillow raise
        return capture.Capture(notes=(capture.unreadable("EXIF", exc),))
    return capture.from_exif(exif)


def _rejected(path: Path, exc: BaseException) -> MediaError:
    return undecodable(path, "camera RAW", f"{DECODER} rejects it ({str(exc) or type(exc).__name__})",
                       "a damaged file, or a camera newer than this LibRaw: update rawpy, or convert it "
                       "to DNG with Adobe DNG Converter")


def _preview(raw: Any, edge: int | None, flip: int, max_pixels: int) -> tuple[Image.Image, str] | None:
    """The camera's embedded JPEG (or bitmap) preview, upright, when it is at least ``edge``
    pixels long; None when there is none that large, or it claims more than ``max_pixels``
    (then the sensor data, already held to that limit, is demosaiced instead)."""
    try:
        thumb = raw.extract_thumb()
    except Exception:  # noqa: BLE001 - no preview, or one LibRaw cannot hand out: demosaic instead
        return None
    image: Image.Image
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(thumb.data))
    else:
        image = Image.fromarray(thumb.data)
    if edge is None or max(image.size) < edge or image.size[0] * image.size[1] > max_pixels:
        return None
    if image.format == "JPEG" and max(image.size) > edge:
        scale = edge / max(image.size)
        image.draft("RGB", (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))))
    image.load()
    rgb = image.convert("RGB")  # the preview's own EXIF orientation, if any, is the RAW's: applied below
    return (rgb.transpose(_FLIP[flip]) if flip in _FLIP else rgb), "preview"


def _demosaic(raw: Any) -> Image.Image:
    """Half-size demosaic with the camera's white balance; LibRaw applies the orientation."""
    return upright_rgb(Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)))
