"""What ``status`` and the web page say about a daemon: ONE report, read from its journal.

Both used to read the journal their own way (the web page's "done in the last hour" was the
current clock hour's bucket, ``status``'s the last 3,600 s; one named the configured model, the
other the running one); now each renders this record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import Config
from .daemon_record import META_KEY, DaemonRecord
from .journal import Job, Journal, State


@dataclass(frozen=True)
class StatusReport:
    daemon: DaemonRecord  # as the daemon last described itself
    running: bool
    model: str  # the model the daemon runs, else the configured one
    queue: dict[State, int]
    done_last_hour: int
    busy_seconds: float  # the model's time on those files
    orphans: int  # files gone longer than state.gone_grace whose sidecars `prune` would remove
    index: tuple[int, int | None]  # passages, bytes (None where SQLite cannot say)
    failures: tuple[Job, ...]

    @property
    def throughput_per_min(self) -> float | None:
        """Files per minute of busy time over the last hour."""
        return round(self.done_last_hour / self.busy_seconds * 60, 2) if self.busy_seconds else None


def read(config: Config, journal: Journal, index: tuple[int, int | None] | None = None) -> StatusReport:
    """The report now; ``index``: the index's figures when the caller keeps them (they cost a
    walk over the database's pages)."""
    daemon = DaemonRecord.from_json(journal.meta(META_KEY))
    done, busy = journal.done_since(time.time() - 3600)
    return StatusReport(
        daemon=daemon, running=journal.daemon_running(), model=daemon.model or config.model.source,
        queue=journal.counts(), done_last_hour=done, busy_seconds=busy,
        orphans=len(journal.gone_before(time.time() - config.state.gone_grace)),
        index=index if index is not None else journal.index.stats(), failures=tuple(journal.failures()))
