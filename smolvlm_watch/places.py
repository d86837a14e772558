"""When and where, recorded: a file's capture (``media.capture``) as the sidecar's ``context``.

The place is the nearest town of 15,000 people or more (``PLACE_MIN_POPULATION``) in GeoNames'
``cities1000``, with its region and country, as the ``reverse_geocode`` package ships it inside
its wheel and searches it with a k-d tree: offline, no API key, the data Immich and PhotoPrism
use too. Smaller places are left out because a city's neighbourhoods are places of their own
there (the centre of Lisbon is "São Paulo"); a village's photo is named by its town, and the
distance to that town's centre is recorded beside it, for a person to judge.
``context.gps`` decides what leaves the file: ``keep`` (coordinates and place), ``place-only``
(the default: the town, never the coordinates) or ``off`` (neither).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

from .config import GpsPolicy
from .media.capture import Capture

EARTH_KM = 6371.0088
PLACE_MIN_POPULATION = 15_000
_lock = threading.Lock()  # the first lookup loads the towns (a second or two): once, whatever the thread


@dataclass(frozen=True)
class Place:
    city: str
    state: str | None
    country: str
    country_code: str
    distance_km: float


def nearest(lat: float, lon: float) -> Place | None:
    """The nearest known town, or None when ``reverse_geocode`` is not installed."""
    try:
        import reverse_geocode
    except ImportError:
        return None
    with _lock:
        hit = reverse_geocode.get((lat, lon), min_population=PLACE_MIN_POPULATION)
    return Place(city=hit.get("city") or "", state=hit.get("state") or None, country=hit.get("country") or "",
                 country_code=hit.get("country_code") or "",
                 distance_km=round(_km(lat, lon, hit["latitude"], hit["longitude"]), 1))


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def context_record(capture: Capture | None, gps: GpsPolicy) -> dict[str, Any] | None:
    """The sidecar's ``context`` object (None when the file recorded nothing): ``taken_at``,
    ``camera``, ``gps`` (only with ``keep``), ``place`` (unless ``off``), ``notes``."""
    if capture is None or capture.empty:
        return None
    out: dict[str, Any] = {}
    if capture.taken_at:
        out["taken_at"] = capture.taken_at
    if capture.camera:
        out["camera"] = capture.camera
    if capture.gps is not None and gps == "keep":
        out["gps"] = {"lat": capture.gps[0], "lon": capture.gps[1]}
    if (place := where(capture, gps)) is not None:
        out["place"] = asdict(place)
    if capture.notes:
        out["notes"] = list(capture.notes)
    return out or None


def where(capture: Capture | None, gps: GpsPolicy) -> Place | None:
    """The file's town, where it records a position and ``context.gps`` lets it be used."""
    if capture is None or capture.gps is None or gps == "off":
        return None
    return nearest(*capture.gps)


def place_label(context: dict[str, Any] | None) -> str | None:
    """``Lisbon, Portugal`` from a ``context`` (a sidecar's, or ``context_record``'s), or None:
    what prompts, search cards and the file page call the place."""
    place = (context or {}).get("place")
    if not isinstance(place, dict):
        return None
    return ", ".join(str(place[k]) for k in ("city", "country") if place.get(k)) or None
