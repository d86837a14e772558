"""Still images through Pillow: JPEG, PNG, WebP, GIF (first frame), TIFF (one page), BMP, AVIF
(Pillow's own decoder) and HEIC/HEIF (iPhone photos; libheif through pillow-heif).

Decoded from the input's open file, never read into memory whole: Pillow reads what the decoder
needs, so a 4 GiB file with a JPEG's magic costs what its header costs until it is refused. A
camera-size JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at least as large as
what the model looks at (``edge``): a 24-megapixel photo is not decoded whole to be shrunk to
2048 pixels. A HEIC holding several images gives its primary one; a 10-bit HEIC comes out as
8-bit RGB; orientation (libheif's transforms, EXIF) is applied.

A JPEG that needs no resizing and no rotation also carries its own compressed stream, minus the
metadata segments (``AS_IS`` in the image's ``info``): a backend that sends images over the wire
can send those bytes, which show exactly the decoded pixels, instead of encoding them again.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, IptcImagePlugin, features

from . import capture
from .base import Media, MediaError, broken, check_pixels, source_info, undecodable, upright_rgb
from .capture import Capture

try:  # HEIC/HEIF is a plugin of Pillow's; without it a HEIC is a clear, counted failure
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_DECODER: str | None = f"pillow-heif {pillow_heif.__version__} (libheif {pillow_heif.libheif_version()})"
except ImportError:  # pragma: no cover - pillow-heif is a dependency; a broken install says so
    HEIF_DECODER = None

AVIF_OK = features.check("avif") is True  # Pillow >= 11.3 wheels read AVIF themselves
FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "MPO", "HEIF", "AVIF"})
SUPPORTED = "JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC/HEIF, AVIF"

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
# ISO base media files (ftyp at offset 4) that hold still images: HEIF/HEIC and AVIF brands
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
AS_IS = "smolvlm_watch.jpeg"  # info key: the file's JPEG stream without metadata, when it shows the pixels as decoded
AS_IS_MAX_BYTES = 16 << 20


def sniff(head: bytes) -> bool:
    """Whether these leading bytes announce an image container Pillow reads for us."""
    return (head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or still_brand(head) is not None)


def still_brand(head: bytes) -> str | None:
    """"heif" or "avif" when an ISO base media file says it holds still images (its major
    brand, or failing that a compatible brand), else None (a video, or no such file)."""
    if head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(size, len(head)), 4)]
    for brand in brands:
        if brand in AVIF_BRANDS:
            return "avif"
        if brand in HEIF_BRANDS:
            return "heif"
    return None


def decoder_name(fmt: str) -> str:
    """What decodes an image of Pillow format ``fmt`` here (for `explain`)."""
    if fmt == "HEIF":
        return HEIF_DECODER or "none: pillow-heif is not installed"
    return f"Pillow {Image.__version__} ({fmt})"


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


def open_pillow(f: BinaryIO, path: Path, max_pixels: int | None) -> Image.Image:
    """The file opened by Pillow (header only, within ``HEADER_BUDGET``), its declared size held
    to ``max_pixels`` (``media.max_pixels``; None for a caller that decodes no pixel)."""
    f.seek(0)
    reader = _Budget(f, path, HEADER_BUDGET)
    try:
        img = Image.open(reader)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise
        raise broken(path, "corrupt or truncated image", exc) from None
    if max_pixels is not None:
        check_pixels(path, *img.size, max_pixels)
    reader.budget = None  # type: ignore[assignment]
    return img


def decode(img: Image.Image, f: BinaryIO, path: Path, st: os.stat_result, sha256: str,
           edge: int | None = None) -> Media:
    """The frame ``open_pillow`` opened from ``f`` (the first; a HEIC's primary), upright and RGB, with its
    source info. ``edge``: the longest edge the model will look at; a JPEG is decoded at the
    smallest DCT scale that still covers it, and one already within it keeps its stream
    (``AS_IS``). The source records the photo's own size."""
    if img.format not in FORMATS:
        raise undecodable(path, f"{img.format} image", "Pillow opened it, but it is not a photo format "
                          "this project reads", f"convert it to one of: {SUPPORTED}")
    turn = _orientation(img)
    width, height = (img.height, img.width) if turn in (5, 6, 7, 8) else img.size  # a quarter turn: it stands
    try:
        if edge and img.format in ("JPEG", "MPO") and max(img.size) > edge:
            scale = edge / max(img.size)  # draft picks the smallest DCT scale still at least this big
            img.draft("RGB", (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))))
        img.load()
        rgb = upright_rgb(img)
        if edge and max(img.size) <= edge and turn == 1 and img.format == "JPEG" and img.mode in ("RGB", "L") \
                and st.st_size <= AS_IS_MAX_BYTES:
            _keep_stream(rgb, f, st.st_size)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise
        raise broken(path, "corrupt or truncated image", exc) from None
    info = source_info(path, st, sha256, "image", width, height)
    return Media(info=info, images=(rgb,))


def captured(img: Image.Image) -> Capture:
    """What the photo's EXIF says of its taking; an EXIF Pillow cannot parse is a note."""
    try:
        exif = img.getexif()
    except Exception as exc:  # noqa: BLE001 - whatever a damaged EXIF block makes Pillow raise
        return Capture(notes=(capture.unreadable("EXIF", exc),))
    return capture.from_exif(exif)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - damaged EXIF: the orientation is then what exif_transpose makes of it
        return 0


def _keep_stream(rgb: Image.Image, f: BinaryIO, size: int) -> None:
    f.seek(0)
    stream = without_metadata(f.read(size + 1))
    if stream is not None:
        rgb.info[AS_IS] = stream


# APP0 (JFIF) and APP14 (Adobe: how the colours were transformed) matter to a decoder; the other
# APPn segments (EXIF with its GPS position, XMP, IPTC, ICC, maker notes) and comments do not
_DROPPED = frozenset(range(0xE1, 0xEE)) | {0xEF, 0xFE}


def without_metadata(data: bytes) -> bytes | None:
    """A JPEG's stream without its metadata segments and without anything after its end marker
    (a phone's appended motion-photo video, a second MPO image): the same pixels, nothing about
    where or by whom. None when the stream is not one this walk understands."""
    if not data.startswith(b"\xff\xd8"):
        return None
    out, i = [b"\xff\xd8"], 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows, where 0xFF is always escaped
            end = data.find(b"\xff\xd9", i)
            return b"".join(out) + data[i:end + 2] if end > 0 else None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            return None
        if marker not in _DROPPED:
            out.append(data[i:i + 2 + length])
        i += 2 + length
    return None


@dataclass(frozen=True)
class Embedded:
    """What a photo already says about itself: its XMP packet, its description (EXIF
    ImageDescription, IPTC Caption-Abstract) and its keywords (IPTC Keywords)."""

    xmp: bytes | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()


def embedded(f: BinaryIO, path: Path) -> Embedded:
    """The metadata embedded in an image file (an empty ``Embedded`` when there is none, or the
    file is no image Pillow reads). Read with Pillow, which already parses EXIF, IPTC (JPEG's
    APP13) and hands over the raw XMP packet of JPEG, PNG, TIFF, WebP and HEIC: no second
    metadata library to install for three fields."""
    try:
        img = open_pillow(f, path, None)  # the metadata only: no pixel is decoded
        xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
        exif = img.getexif()
        iptc = IptcImagePlugin.getiptcinfo(img) or {}  # type: ignore[arg-type]  # any opened file
    except Exception:  # noqa: BLE001 - no metadata to carry over is an empty answer, not an error
        return Embedded()
    description = _text(exif.get(0x010E)) or _text(iptc.get((2, 120)))
    words = iptc.get((2, 25)) or []
    keywords = tuple(w for w in (_text(k) for k in (words if isinstance(words, list) else [words])) if w)
    return Embedded(xmp.encode("utf-8") if isinstance(xmp, str) else xmp, description, keywords)


def _text(value: Any) -> str | None:
    """A metadata string (IPTC gives bytes, in UTF-8 nowadays or Latin-1 before), trimmed."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    if isinstance(value, str):
        value = value.strip("\x00 \t\r\n")
        return value or None
    return None
