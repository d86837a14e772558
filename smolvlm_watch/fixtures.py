"""Photos as cameras and phones write them, generated here: a 24-megapixel JPEG with EXIF, IPTC
and XMP, an iPhone-style HEIC (EXIF orientation, 10-bit, several images), AVIF, and a DNG that
LibRaw demosaics (a real Bayer mosaic) with an optional embedded JPEG preview.

No camera files can be downloaded where this project is built, and 1024x768 PNGs exercise none
of what real libraries hold, so the tests and benchmarks use these. Every image is seeded: the
same call writes the same pixels. The content is a gradient with shapes, text and sensor noise,
so JPEG and HEVC work as hard as on a photo (a flat colour compresses to nothing).

    python -m smolvlm_watch.testing photos DIR   # with GPS and capture times: lisbon.jpg, IMG_0003.HEIC, IMG_0004.MP4
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CAMERA = (6000, 4000)  # 24 MP, 3:2, as most APS-C and full-frame cameras write


def _folder(path: str | Path) -> Path:
    """``path``, its folder made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def scene(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A seeded photo-like RGB picture: a sky-to-ground gradient, shapes, a caption, noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(40, 220, 3).astype(np.float32), rng.uniform(40, 220, 3).astype(np.float32)
    pixels = np.broadcast_to(top * (1 - y) + bottom * y, (height, width, 3)).copy()
    pixels += rng.normal(0.0, 6.0, (height, width, 1)).astype(np.float32)  # sensor noise
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(max(4, width // 40), max(5, width // 6)))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw.text((width // 20, height // 20), f"seed {seed}", fill=(0, 0, 0), font_size=max(10, height // 20))
    return img


LISBON = (38.716667, -9.139722)  # a street corner in the Baixa, as a phone's GPS writes it
LISBON_TAKEN = ("2019:07:14 18:03:22", "+01:00")


def exif(orientation: int = 1, make: str = "Acme", model: str = "Field Camera", description: str | None = None,
         taken: tuple[str, str | None] | None = None, gps: tuple[float, float] | None = None) -> Image.Exif:
    """EXIF a camera writes: make, model, orientation, the time the file was written; ``taken``
    (EXIF time, UTC offset or None) as DateTimeOriginal, ``gps`` (latitude, longitude) as the
    GPS block a phone writes (degrees, minutes, seconds and N/S/E/W)."""
    data = Image.Exif()
    data[0x010F], data[0x0110], data[0x0112] = make, model, orientation
    data[0x0132] = "2026:06:01 10:20:30"
    if description:
        data[0x010E] = description
    if taken:
        ifd = data.get_ifd(0x8769)
        ifd[0x9003] = taken[0]
        if taken[1]:
            ifd[0x9011] = taken[1]
    if gps:
        block = data.get_ifd(0x8825)
        block[1], block[2] = ("N" if gps[0] >= 0 else "S"), _dms(abs(gps[0]))
        block[3], block[4] = ("E" if gps[1] >= 0 else "W"), _dms(abs(gps[1]))
    return data


def _dms(value: float) -> tuple[Any, Any, Any]:
    from PIL.TiffImagePlugin import IFDRational

    degrees, rest = divmod(value * 3600, 3600)
    minutes, seconds = divmod(rest, 60)
    return IFDRational(int(degrees)), IFDRational(int(minutes)), IFDRational(round(seconds * 100), 100)


def iptc(keywords: list[str], caption: str | None = None) -> bytes:
    """A Photoshop APP13 (IPTC-IIM) block with keywords (2:25) and a caption (2:120), UTF-8."""
    records = b"\x1c\x01\x5a\x00\x03\x1b\x25\x47"  # 1:90 coded character set: UTF-8
    for word in keywords:
        value = word.encode("utf-8")
        records += b"\x1c\x02\x19" + struct.pack(">H", len(value)) + value
    if caption:
        value = caption.encode("utf-8")
        records += b"\x1c\x02\x78" + struct.pack(">H", len(value)) + value
    if len(records) % 2:
        records += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(records)) + records
    return b"Photoshop 3.0\x00" + resource


def camera_jpeg(path: str | Path, size: tuple[int, int] = CAMERA, seed: int = 0, orientation: int = 1,
                keywords: list[str] | None = None, description: str | None = None, xmp: bytes | None = None,
                quality: int = 92, taken: tuple[str, str | None] | None = None,
                gps: tuple[float, float] | None = None) -> Path:
    """A JPEG as a camera (or a photo manager after it) writes it; ``keywords`` go to IPTC,
    ``description``, ``taken`` and ``gps`` to EXIF, ``xmp`` is embedded as an APP1 packet."""
    path = _folder(path)
    buf = io.BytesIO()
    tags = exif(orientation, description=description, taken=taken, gps=gps)
    scene(size, seed).save(buf, "JPEG", quality=quality, exif=tags, xmp=xmp)
    data = buf.getvalue()
    if keywords:
        block = iptc(keywords)
        data = data[:2] + b"\xff\xed" + struct.pack(">H", len(block) + 2) + block + data[2:]
    path.write_bytes(data)
    return path


def heic(path: str | Path, size: tuple[int, int] = (4032, 3024), seed: int = 0, orientation: int = 1,
         ten_bit: bool = False, extra_images: int = 0, taken: tuple[str, str | None] | None = None,
         gps: tuple[float, float] | None = None) -> Path:
    """A HEIC as an iPhone writes it: the pixels stored as the sensor saw them and an EXIF
    orientation saying how to turn them; ``ten_bit`` stores 10 bits per channel;
    ``extra_images`` adds smaller images after the primary one (bursts, depth maps)."""
    import pillow_heif

    path = _folder(path)
    img = scene(size, seed)
    if ten_bit:
        wide = (np.asarray(img, dtype=np.uint16) << 8).astype("<u2")  # 16-bit samples, stored as 10
        heif = pillow_heif.from_bytes(mode="RGB;16", size=img.size, data=wide.tobytes())
    else:
        heif = pillow_heif.from_pillow(img)
    for i in range(extra_images):
        heif.add_from_pillow(scene((size[0] // 4, size[1] // 4), seed + 100 + i))
    tags = exif(orientation, make="Apple", model="iPhone 15", taken=taken, gps=gps)
    heif.save(path, quality=85, exif=tags.tobytes(), primary_index=0)
    return path


def avif(path: str | Path, size: tuple[int, int] = (3000, 2000), seed: int = 0, orientation: int = 1) -> Path:
    """An AVIF through Pillow's own encoder, with an EXIF orientation."""
    path = _folder(path)
    scene(size, seed).save(path, "AVIF", quality=80, exif=exif(orientation))
    return path


def dng(path: str | Path, size: tuple[int, int] = (1200, 800), preview: tuple[int, int] | None = None,
        seed: int = 0, orientation: int = 1, taken: str | None = None,
        gps: tuple[float, float] | None = None) -> Path:
    """A DNG LibRaw reads as a camera RAW: a 12-bit RGGB Bayer mosaic of ``scene`` (so the
    demosaiced picture is the scene), camera orientation, ``taken`` as its DateTimeOriginal,
    ``gps`` as a GPS directory, and when ``preview`` is given an embedded JPEG preview of that
    size, as cameras and Adobe's converter write."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    path = _folder(path)
    width, height = size
    rgb = np.asarray(scene(size, seed), dtype=np.uint16) * 16  # 8 to 12 bits
    mosaic: Any = np.empty((height, width), np.uint16)
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = rgb[0::2, 0::2, 0], rgb[1::2, 1::2, 2]
    mosaic[0::2, 1::2], mosaic[1::2, 0::2] = rgb[0::2, 1::2, 1], rgb[1::2, 0::2, 1]
    tags = DNGTags()
    values: list[tuple[Any, Any]] = [
        (Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width), (Tag.TileLength, height),
        (Tag.Orientation, orientation), (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, "Acme"), (Tag.Model, "Field Camera"), (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2), *([(Tag.DateTimeOriginal, taken)] if taken else []),
        *([(GPS_INFO, 0)] if gps else [])]  # pointed at the GPS directory appended below
    for tag, value in values:
        tags.set(tag, value)
    converter = RAW2DNG()
    converter.options(tags, path="", compress=False)
    written = Path(converter.convert(mosaic, filename=str(path.with_suffix(""))))
    if gps:
        _append_gps(written, gps)
    if preview:
        _append_preview(written, scene(size, seed).resize(preview, Image.Resampling.LANCZOS))
    if written != path:
        written.replace(path)
    return path


GPS_INFO = (34853, (4, 4))  # pidng's form of a tag: its number and type (LONG, 4 bytes)


def _append_gps(path: Path, gps: tuple[float, float]) -> None:
    """Append a GPS directory (latitude and longitude, degrees-minutes-seconds as rationals) and
    point IFD0's GPSInfo entry at it, as a camera's DNG holds its position."""
    data = bytearray(path.read_bytes())
    ifd0 = struct.unpack_from("<I", data, 4)[0]
    entry = next(ifd0 + 2 + 12 * i for i in range(struct.unpack_from("<H", data, ifd0)[0])
                 if struct.unpack_from("<H", data, ifd0 + 2 + 12 * i)[0] == GPS_INFO[0])
    data += b"\0" * (-len(data) % 4)
    at = len(data)
    numbers = at + 2 + 4 * 12 + 4  # the rationals follow the directory
    refs = [b"N\0" if gps[0] >= 0 else b"S\0", b"E\0" if gps[1] >= 0 else b"W\0"]
    data += struct.pack("<H", 4)
    for i in range(2):
        data += struct.pack("<HHI", 1 + 2 * i, 2, 2) + refs[i].ljust(4, b"\0")
        data += struct.pack("<HHII", 2 + 2 * i, 5, 3, numbers + 24 * i)
    data += struct.pack("<I", 0)
    for value in gps:
        degrees, rest = divmod(abs(value) * 3600, 3600)
        minutes, seconds = divmod(rest, 60)
        data += struct.pack("<6I", int(degrees), 1, int(minutes), 1, round(seconds * 100), 100)
    struct.pack_into("<I", data, entry + 8, at)
    path.write_bytes(bytes(data))


def _append_preview(path: Path, image: Image.Image) -> None:
    """Append a JPEG preview IFD (NewSubfileType 1, JPEG compression) chained after IFD0, where
    LibRaw's ``extract_thumb`` finds it."""
    data = bytearray(path.read_bytes())
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    ifd0 = struct.unpack_from("<I", data, 4)[0]
    next_at = ifd0 + 2 + 12 * struct.unpack_from("<H", data, ifd0)[0]
    data += b"\0" * (-len(data) % 4)
    jpeg_at = len(data)
    data += jpeg + b"\0" * (-len(jpeg) % 4)
    ifd1 = len(data)
    w, h = image.size
    entries = [(254, 4, 1), (256, 4, w), (257, 4, h), (259, 3, 7), (262, 3, 6), (273, 4, jpeg_at), (277, 3, 3),
               (278, 4, h), (279, 4, len(jpeg))]
    data += struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        data += struct.pack("<HHI", tag, kind, 1) + struct.pack("<HH" if kind == 3 else "<I",
                                                                 *((value, 0) if kind == 3 else (value,)))
    data += struct.pack("<I", 0)
    struct.pack_into("<I", data, next_at, ifd1)
    path.write_bytes(bytes(data))


def phone_video(path: str | Path, location: tuple[float, float] | None = LISBON,
                created: str | None = "2019-07-14T17:05:00.000000Z", seconds: int = 2) -> Path:
    """An MP4 as a phone writes it: its creation time in the movie header and its position as
    the ISO 6709 ``location`` (QuickTime's ``©xyz``), a few frames of a moving ``scene``."""
    import av

    path = _folder(path)
    with av.open(str(path), "w") as out:
        if location:
            out.metadata["location"] = f"{location[0]:+08.4f}{location[1]:+09.4f}/"
        if created:
            out.metadata["creation_time"] = created
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(4 * seconds):
            frame = av.VideoFrame.from_image(scene((320, 240), seed=i))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def photos(out_dir: str | Path) -> list[Path]:
    """One of each: what a family library holds (the ``photos`` command)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [camera_jpeg(out / "camera-24mp.jpg", keywords=["Ferien", "Strand"], description="Am Meer"),
            heic(out / "IMG_0001.HEIC", orientation=6), heic(out / "IMG_0002.HEIC", ten_bit=True, extra_images=2),
            avif(out / "photo.avif", orientation=3), dng(out / "raw-preview.dng", (1200, 800), preview=(1200, 800)),
            dng(out / "raw-mosaic.dng", (1200, 800), orientation=6, taken=LISBON_TAKEN[0], gps=LISBON),
            camera_jpeg(out / "lisbon.jpg", (1600, 1200), seed=7, taken=LISBON_TAKEN, gps=LISBON),
            heic(out / "IMG_0003.HEIC", (1600, 1200), seed=8, taken=("2024:07:20 11:30:00", "+02:00"),
                 gps=(45.8992, 6.1294)),
            phone_video(out / "IMG_0004.MP4")]
