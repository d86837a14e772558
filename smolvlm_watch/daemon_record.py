"""What the running daemon says about itself, kept in its journal for the commands and the web page.

One typed record, written by the daemon (``Daemon.write_meta``) and read back by ``status``,
``backfill`` and the web page alike, instead of a JSON blob each read their own way. Reading an
older journal's record, a key it lacks takes its default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import jsontext

META_KEY = "daemon"


@dataclass(frozen=True)
class WatchRecord:
    path: str
    mode: str  # native, polling, unavailable
    reason: str = ""
    available: bool = True
    missed_events: int = 0


@dataclass(frozen=True)
class DaemonRecord:
    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    model: str | None = None
    model_loaded: bool = False
    device: str | None = None
    model_unreachable: str | None = None  # "model server unreachable since ..., last error: ..."
    restart_needed: str | None = None  # what the last refused reload needs a restart for
    config: str | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)  # per watch path: what current results carry
    watches: tuple[WatchRecord, ...] = ()
    missed_events_total: int = 0

    def to_json(self) -> str:
        return jsontext.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> DaemonRecord:
        """The record as a journal holds it; an empty one where no daemon ever wrote it."""
        raw: dict[str, Any] = json.loads(text) if text else {}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        watch_keys = {f.name for f in fields(WatchRecord)}
        values["watches"] = tuple(WatchRecord(**{k: v for k, v in w.items() if k in watch_keys})
                                  for w in raw.get("watches") or ())
        return cls(**values)
