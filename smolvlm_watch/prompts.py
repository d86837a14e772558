"""A task's prompt filled with what its file records: ``{place}``, ``{camera}``, ``{taken_at}``.

A small captioning model cannot know when or where a photo was taken; the camera wrote both.
A prompt may ask with them in mind::

    Describe this photo[, taken in {place}][ in {taken_at:%B %Y}].

``{taken_at}`` takes a ``strftime`` format after a colon (``%Y-%m-%d`` without one). A part in
square brackets that holds a placeholder is a clause: it is dropped whole when a placeholder in
it has no value for the file (no GPS, no EXIF, ``context.gps: off``), else kept without its
brackets. A placeholder outside brackets with no value is dropped with the space before it.
Brackets and braces that hold no placeholder are the prompt's own and stay as written.

The rendered prompt is what the task's fingerprint covers (``Planned.for_file``), so a
template edit makes stale only the files whose prompt it changes, and a prompt with no
placeholder renders to itself: its fingerprint is what it always was.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime
from typing import Any
from collections.abc import Mapping

from .config import GpsPolicy
from .media.capture import Capture
from .places import place_label, where

PLACEHOLDER = re.compile(r"\{(place|camera|taken_at)(?::([^{}\[\]]*))?\}")
CLAUSE = re.compile(r"\[([^\[\]]*)\]")
DATE_FORMAT = "%Y-%m-%d"


def templated(prompt: str) -> bool:
    return PLACEHOLDER.search(prompt) is not None


def values(capture: Capture | None, gps: GpsPolicy) -> dict[str, Any]:
    """What the placeholders stand for in one file: its town and country (never coordinates;
    none under ``context.gps: off``), its camera, its capture time (None where unknown)."""
    if capture is None:
        return {"place": None, "camera": None, "taken_at": None}
    place = where(capture, gps)
    return {"place": place_label({"place": asdict(place)}) if place is not None else None, "camera": capture.camera,
            "taken_at": datetime.fromisoformat(capture.taken_at) if capture.taken_at else None}


def render(template: str, known: Mapping[str, Any]) -> str:
    """The prompt for one file (see the module's docstring for the rules)."""

    def clause(match: re.Match[str]) -> str:
        inside = match.group(1)
        if not templated(inside):
            return match.group(0)  # the prompt's own brackets
        filled = _fill(inside, known)
        return filled if filled is not None else ""

    rendered = CLAUSE.sub(clause, template)
    return re.sub(r"\s?" + PLACEHOLDER.pattern, lambda m: _one(m, known, bare=True), rendered)


def _fill(text: str, known: Mapping[str, Any]) -> str | None:
    """``text`` with its placeholders filled, or None when one of them has no value."""
    if any(known.get(m.group(1)) is None for m in PLACEHOLDER.finditer(text)):
        return None
    return PLACEHOLDER.sub(lambda m: _one(m, known), text)


def _one(match: re.Match[str], known: Mapping[str, Any], bare: bool = False) -> str:
    name, fmt = match.group(1), match.group(2)
    value = known.get(name)
    if value is None:
        return ""
    lead = match.group(0)[0] if bare and match.group(0)[0].isspace() else ""
    return lead + (value.strftime(fmt or DATE_FORMAT) if isinstance(value, datetime) else str(value))
