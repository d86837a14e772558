"""One file through the whole path: sidecar check → media → tasks → writers.

Used by both ``process`` and the daemon's worker, so a file gets the same sidecars whichever way
it arrives. A file whose sidecar already holds current results for every task (same content hash,
same fingerprints) is skipped without decoding it; under the ``merge`` policy only the tasks that
are missing or stale run, and the others' results are kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, OutputConfig, WatchConfig
from .media import MediaError, load, sha256_file
from .plugins import Registry
from .runtime import Runtime
from .sidecar import SidecarError, SidecarRecord, Target, read_json
from .tasks import Planned, plan, run_tasks
from .video import Sampling


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str  # done | skipped | failed
    error: str | None = None
    transient: bool = False
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0
    tasks_run: tuple[str, ...] = ()
    sha256: str | None = None


class Pipeline:
    """Processes files with one shared runtime and the registered tasks and writers."""

    def __init__(self, config: Config, registry: Registry, runtime: Runtime):
        self.config = config
        self.registry = registry
        self.runtime = runtime

    def planned(self, watch: WatchConfig) -> list[Planned]:
        """The watch's tasks with their effective settings and fingerprints."""
        model = self.config.model
        out = []
        for name in watch.tasks:
            provided = self.registry.tasks[name]
            out.append(plan(provided.obj, self.config.task_config(name, watch), provided.plugin, provided.version,
                            model.source, model.revision, model.image))
        return out

    def fingerprint(self, watch: WatchConfig) -> str:
        """One hash over every task's fingerprint: what the journal compares for staleness."""
        from .runtime import fingerprint

        return fingerprint(sorted(p.fingerprint for p in self.planned(watch)), sorted(watch.outputs))

    def sampling(self, watch: WatchConfig) -> Sampling:
        """Video sampling for a watch: its settings over the loaded processor's fps and max frames."""
        v = watch.video
        defaults = self.runtime.video_sampling() if v.fps is None or v.max_frames is None else {}
        return Sampling(fps=v.fps or defaults["fps"], max_frames=v.max_frames or defaults["max_frames"],
                        mode=v.mode, skip_black=v.skip_black, timeout=v.timeout)

    def process(self, path: str | Path, watch: WatchConfig, force: bool = False) -> FileResult:
        path = Path(path)
        start = time.perf_counter()
        try:
            return self._process(path, watch, force, start)
        except MediaError as exc:
            return FileResult(str(path), "failed", exc.reason, transient=exc.transient,
                              seconds=time.perf_counter() - start)
        except (SidecarError, OSError) as exc:
            transient = isinstance(exc, OSError) and exc.errno in (28, 11, 16)  # ENOSPC, EAGAIN, EBUSY
            return FileResult(str(path), "failed", str(exc), transient=transient,
                              seconds=time.perf_counter() - start)

    def _process(self, path: Path, watch: WatchConfig, force: bool, start: float) -> FileResult:
        output: OutputConfig = watch.output
        target = Target.for_media(path, output, watch.path)
        existing = read_json(target.json_path) if "json" in watch.outputs else None
        planned = self.planned(watch)
        if existing is not None and output.policy == "skip" and not force:
            return FileResult(str(path), "skipped", seconds=time.perf_counter() - start)
        try:
            sha = sha256_file(path)
        except FileNotFoundError:
            raise MediaError(path, "file vanished before it could be read") from None
        same_content = existing is not None and (existing.get("source") or {}).get("sha256") == sha
        todo = planned if force or not same_content else [p for p in planned if not _current(existing, p)]
        if not todo:
            return FileResult(str(path), "skipped", seconds=time.perf_counter() - start, sha256=sha)
        media = load(path, max_pixels=self.config.media.max_pixels, max_bytes=self.config.media.max_bytes,
                     sampling=self.sampling(watch))
        outcomes = run_tasks(media, todo, self.runtime)
        kept = dict(existing["tasks"]) if same_content and output.policy == "merge" else {}
        tasks = {**kept, **{o.name: o.data for o in outcomes}}
        record = SidecarRecord(source=media.info.as_dict(), model=self.runtime.info().as_dict(), tasks=tasks,
                               extra=dict(media.sidecar_extra))
        written = self._write(record, target, existing, watch)
        errors = [f"{o.name}: {o.data['error']}" for o in outcomes if "error" in o.data]
        # A task error (out of memory, a flaky plugin) may pass next time: retried, then quarantined.
        return FileResult(
            str(path), "failed" if errors else "done", "; ".join(errors) or None, transient=bool(errors),
            outputs=tuple(str(p) for p in written), seconds=time.perf_counter() - start,
            tasks_run=tuple(p.task.name for p in todo), sha256=media.info.sha256,
        )

    def _write(self, record: SidecarRecord, target: Target, existing: dict[str, Any] | None,
               watch: WatchConfig) -> list[Path]:
        """Every writer but ``json`` first; then the JSON sidecar, recording what they wrote."""
        target = Target(media=target.media, folder=target.folder, output=target.output,
                        previous_outputs=dict((existing or {}).get("outputs") or {}))
        written: dict[Path, str] = {}
        names = [n for n in watch.outputs if n != "json"] + [n for n in watch.outputs if n == "json"]
        for name in names:
            writer = self.registry.writers[name].obj
            if name == "json":
                record = SidecarRecord(source=record.source, model=record.model, tasks=record.tasks,
                                       created=record.created, extra=record.extra,
                                       outputs={p.name: h for p, h in written.items()})
            written.update(writer.write(record, target))
        return list(written)


def _current(existing: dict[str, Any], p: Planned) -> bool:
    entry = (existing.get("tasks") or {}).get(p.task.name) or {}
    return entry.get("fingerprint") == p.fingerprint and "error" not in entry
