"""JSON text that survives any file name.

A name that is not valid UTF-8 (an old Latin-1 archive, an SMB share) reaches Python as lone
surrogates (PEP 383). No UTF-8 encoder accepts those, so one such name would stop every write
of a sidecar, a log line or a journal row that mentions it. Here they become ``\\udcXX``
escapes, which ``json.loads`` reads back to the very same name; every other character stays as
it is (Cyrillic remains readable, not escaped).
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any, **kwargs: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def printable(text: str) -> str:
    """``text`` for a terminal or a UTF-8 stream: undecodable bytes of a file name shown as
    ``\\xNN`` instead of raising."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
