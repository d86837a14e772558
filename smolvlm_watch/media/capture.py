"""When, with what and where a photo or video was taken, as the file itself records it.

A small captioning model cannot know the date or the place from pixels; the camera wrote both.
Read with what already parses them: Pillow's EXIF (JPEG, TIFF, PNG, WebP, and HEIC through
pillow-heif) and PyAV's container tags for videos (QuickTime's ``creation_time`` and the
ISO 6709 location a phone writes). Only what the file says: the capture time is EXIF
``DateTimeOriginal`` (with ``OffsetTimeOriginal`` when present) or a video's creation time,
never the file's mtime pretending to be one. A malformed block is a note, never a failed file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from collections.abc import Mapping

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL = 0x010F, 0x0110
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class Capture:
    """What a file records about its taking. ``taken_at``: ISO 8601, with the UTC offset when
    the file gives one (a bare EXIF time is the camera's local time, kept without one);
    ``gps``: latitude and longitude in degrees (WGS 84); ``notes``: what could not be read."""

    taken_at: str | None = None
    camera: str | None = None
    gps: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.taken_at is None and self.camera is None and self.gps is None and not self.notes


def from_exif(exif: Any) -> Capture:
    """The capture of an image's EXIF (Pillow's ``Image.Exif``); each block read on its own, so a
    broken GPS block still leaves the date."""
    notes: list[str] = []
    # DateTimeOriginal lives in the Exif directory; a DNG may carry it in its first directory
    taken = _guarded(notes, "EXIF date", lambda: _exif_time(exif.get_ifd(EXIF_IFD)) or _exif_time(exif))
    camera = _guarded(notes, "EXIF camera", lambda: _camera(exif.get(MAKE), exif.get(MODEL)))
    gps = _guarded(notes, "EXIF GPS", lambda: _exif_gps(exif.get_ifd(GPS_IFD)))
    return Capture(taken, camera, gps, tuple(notes))


def from_container(tags: Mapping[str, str]) -> Capture:
    """The capture of a video's container tags (PyAV's ``container.metadata``)."""
    notes: list[str] = []
    taken = _guarded(notes, "creation_time", lambda: _video_time(tags.get("creation_time")))
    location = tags.get("location") or tags.get("com.apple.quicktime.location.ISO6709")
    gps = _guarded(notes, "location", lambda: _iso6709(location)) if location else None
    make = tags.get("make") or tags.get("com.apple.quicktime.make")
    model = tags.get("model") or tags.get("com.apple.quicktime.model")
    return Capture(taken, _camera(make, model), gps, tuple(notes))


def unreadable(what: str, exc: BaseException) -> str:
    """The note for a block that could not be read (``EXIF GPS unreadable (ValueError: ...)``)."""
    return f"{what} unreadable ({exc.__class__.__name__}: {exc})"


def _guarded(notes: list[str], what: str, read: Any) -> Any:
    try:
        return read()
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        notes.append(unreadable(what, exc))
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 \t\r\n")
    return value or None


def _exif_time(ifd: Mapping[int, Any]) -> str | None:
    raw = _text(ifd.get(DATETIME_ORIGINAL))
    if raw is None or raw.startswith("0000"):  # cameras write zeros when their clock was never set
        return None
    taken = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
    offset = _text(ifd.get(OFFSET_TIME_ORIGINAL))
    return taken.isoformat() + (offset if offset and _OFFSET.match(offset) else "")


def _video_time(raw: str | None) -> str | None:
    if not raw or raw.startswith("1904-01-01") or raw.startswith("1970-01-01"):  # an unset QuickTime clock
        return None
    when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return when.replace(microsecond=0).isoformat()


def _camera(make: Any, model: Any) -> str | None:
    make, model = _text(make), _text(model)
    if model and make and model.casefold().startswith(make.casefold()):
        return model  # "Canon" + "Canon EOS R5": the model already says it
    return " ".join(p for p in (make, model) if p) or None


def _exif_gps(ifd: Mapping[int, Any]) -> tuple[float, float] | None:
    if GPS_LAT not in ifd or GPS_LON not in ifd:
        return None
    lat = _degrees(ifd[GPS_LAT], _text(ifd.get(GPS_LAT_REF)) or "N", "S")
    lon = _degrees(ifd[GPS_LON], _text(ifd.get(GPS_LON_REF)) or "E", "W")
    return _checked(lat, lon)


def _degrees(dms: Any, ref: str, negative: str) -> float:
    d, m, s = (float(x) for x in dms)
    value = d + m / 60 + s / 3600
    return -value if ref.upper().startswith(negative) else value


def _iso6709(text: str) -> tuple[float, float] | None:
    match = _ISO6709.match(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 6709 position: {text[:40]!r}")
    return _checked(float(match.group(1)), float(match.group(2)))


def _checked(lat: float, lon: float) -> tuple[float, float] | None:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"position out of range ({lat}, {lon})")
    if lat == 0 and lon == 0:  # "Null Island": a receiver with no fix writes zeros
        return None
    return round(lat, 6), round(lon, 6)
