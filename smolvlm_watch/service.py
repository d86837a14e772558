"""The daemon: watches armed, journal open, one worker that owns the model.

The main thread is the supervisor: it turns settled paths into journal rows, rescans, restarts
dead observers, answers signals and talks to systemd. The worker thread leases jobs from the
journal and runs them through the pipeline, binding path and job id to every log line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import structlog

from . import config as configmod, logs
from .config import Config, ConfigError, WatchConfig
from .journal import BACKFILL, LIVE, Job, Journal, JournalError
from .media import sha256_file
from .pipeline import FileResult, Pipeline
from .plugins import PluginError, Registry
from .progress import Progress
from .runtime import ModelLoadError, create_runtime
from .sidecar import Target, relocate
from .watcher import ArmedWatch, MediaFilter, WatchSet, scan

STOP_GRACE_SECONDS = 20.0
HEALTH_INTERVAL = 5.0


# --- systemd notify ----------------------------------------------------------------------------

def notify(message: str) -> bool:
    """Send an sd_notify datagram to $NOTIFY_SOCKET; a no-op when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC when the watchdog is meant for us, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


# --- configuration -----------------------------------------------------------------------------

def load_checked(path: str | Path) -> tuple[Config, Registry]:
    config = configmod.load(path)
    registry = Registry(config.plugins)
    configmod.check_names(config, set(registry.tasks), set(registry.writers))
    return config, registry


@dataclass
class _Current:
    """The batch the worker is running: what the watchdog check and the overdue log need."""

    paths: tuple[str, ...]
    started: float
    overdue_logged: bool = False


@dataclass(frozen=True)
class _Taken:
    """A leased job on its way through the pipeline, with the file's state when it was taken
    (recorded on success: a file that changed meanwhile is seen as changed by the next scan)."""

    job: Job
    watch: WatchConfig
    fingerprint: str
    size: int
    mtime: float
    sha256: str | None  # when the rename check hashed the file already: prepare need not again


class Daemon:
    def __init__(self, config_path: str | Path):
        self.config_path = Path(config_path)
        self.log = structlog.get_logger("smolvlm_watch.daemon")
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.wake = threading.Event()
        self.current: _Current | None = None
        self.taken: dict[int, _Taken] = {}  # leased by the worker, not yet recorded
        self.processed = 0
        self.started = time.time()

    # --- start ---------------------------------------------------------------------------------

    def start(self, config: Config, registry: Registry) -> None:
        self.config, self.registry = config, registry
        self.journal = Journal(config.state.db, exclusive=True)
        recovered = self.journal.recover(config.state.max_attempts)
        if recovered:
            self.log.warning("recovered_interrupted_jobs", count=recovered)
        self.runtime = create_runtime(config.model, config.runtime)
        self.pipeline = Pipeline(config, registry, self.runtime)
        if config.model.preload:
            self._load_model()
        self.watches = WatchSet(config.watches, self._on_dir, self.log)
        self.watches.start()
        self.scan_all()
        self._write_meta()
        self.worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self.worker.start()
        notify("READY=1\nSTATUS=watching " + ", ".join(str(w.path) for w in config.watches))
        self.log.info("ready", watches=len(config.watches), db=str(config.state.db),
                      model=config.model.source, model_loaded=self.runtime.loaded)

    def _load_model(self) -> None:
        notify("EXTEND_TIMEOUT_USEC=600000000\nSTATUS=loading model " + self.config.model.source)
        self.log.info("model_loading", model=self.config.model.source)
        t0 = time.monotonic()
        self.runtime.load()
        self.log.info("model_loaded", model=self.config.model.source, device=self.runtime.device,
                      dtype=self.runtime.dtype, seconds=round(time.monotonic() - t0, 2))

    # --- scanning ------------------------------------------------------------------------------

    def _enqueue(self, watch: WatchConfig, path: Path, priority: int) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        queued = self.journal.enqueue(str(path), str(watch.path), st.st_size, st.st_mtime, priority)
        if queued:
            self.wake.set()
        return queued

    def _on_dir(self, armed: ArmedWatch, folder: Path) -> None:
        """A folder appeared (moved in, mount back): its files come with no events of their own."""
        if folder != armed.watch.path and not armed.filter.accepts_dir(folder):
            return
        for path in scan(replace(armed.watch, path=folder), armed.filter):
            armed.tracker.touch(path)

    def scan_all(self) -> int:
        """Reconcile the journal with every available watch: new or changed files are queued,
        vanished ones marked gone (their hashes stay, so a renamed file keeps its sidecars)."""
        queued = 0
        for armed in self.watches.armed:
            if not armed.available:
                continue  # a vanished mount is not 'every file deleted'
            for path in scan(armed.watch, armed.filter):
                queued += self._enqueue(armed.watch, path, BACKFILL)
            root = str(armed.watch.path)
            for job in self.journal.jobs("watch = ? AND state != 'gone'", (root,)):
                if not os.path.exists(job.path):
                    self.journal.mark_gone(job.id)
        if queued:
            self.log.info("scan_queued", files=queued)
        return queued

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        """Stream due jobs through the pipeline: the next files decode while the model runs, and
        the files decoded by then share a batch. The stream ends when the queue is empty (a live
        file is never held back for a full batch), at a stop, or when a reload swapped the pipeline."""
        while not self.stop_event.is_set():
            pipeline = self.pipeline  # what was taken finishes with the pipeline it started with
            results = 0
            try:
                for result in pipeline.process_many(
                        self._leased(pipeline), pages=self.journal, on_batch=self._on_batch,
                        stop=lambda: self.stop_event.is_set() or self.pipeline is not pipeline):
                    # results come in the order the jobs were taken, which is self.taken's order
                    self._record(self.taken.pop(next(iter(self.taken))), result)
                    results += 1
            except Exception as exc:  # noqa: BLE001 - the worker must survive any batch
                self.log.exception("batch_crashed", error=str(exc))
                for taken in self.taken.values():
                    self._fail(taken.job.id, f"internal error: {type(exc).__name__}: {exc}", transient=True)
                self.taken.clear()
            finally:
                self.current = None
                structlog.contextvars.clear_contextvars()
            for taken in self.taken.values():  # taken but not run: a stop or a reload came first
                self.journal.release(taken.job.id)
            self.taken = {}
            if not results:
                self.wake.wait(0.5)
                self.wake.clear()

    def _leased(self, pipeline: Pipeline) -> Iterator[tuple[Path, WatchConfig, bool, str | None]]:
        """Due jobs, live before backfill, while there are any: each checked (vanished? only
        renamed?) and handed on with its path and job id bound to the log context. A job that
        was running when a daemon died runs alone, in a stream of its own."""
        while not self.stop_event.is_set() and self.pipeline is pipeline:
            job = self.journal.lease(self.config.state.lease_seconds)
            if job is None:
                return
            if job.id in self.taken:
                continue  # its lease ran out while it waited to run; it is ours already
            if job.interrupted and self.taken:
                self.journal.release(job.id)  # it runs alone, once the files in flight are done
                return
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(path=job.path, job_id=job.id)
            try:
                taken = self._admit(job, pipeline)
            except Exception as exc:  # noqa: BLE001 - one job's trouble is that job's failure
                self.log.exception("job_crashed", error=str(exc))
                self._fail(job.id, f"internal error: {type(exc).__name__}: {exc}", transient=True)
                continue
            if taken is not None:
                self.taken[job.id] = taken
                if self.current is None:  # the clock runs from here: decoding can wedge too
                    self.current = _Current((job.path,), time.monotonic())
                yield Path(job.path), taken.watch, job.force, taken.sha256
            if job.interrupted:
                return  # alone: if it kills the daemon again, no file beside it shares the blame

    def _admit(self, job: Job, pipeline: Pipeline) -> _Taken | None:
        """A job worth running, or None when it was settled here: the file vanished or left every
        watch, or it is a known file under a new name whose sidecars are simply moved."""
        path = Path(job.path)
        watch = pipeline.config.watch_for(path)
        if watch is None or not os.path.exists(path):
            self.journal.mark_gone(job.id)
            self.log.info("job_dropped", reason="file vanished" if watch else "no longer in any watch")
            return None
        st = path.stat()
        fingerprint = pipeline.fingerprint(watch)
        sha = None
        if not job.force and not Target.for_media(path, watch.output, watch.path).json_path.exists():
            sha = sha256_file(path)
            if self._adopt_renamed(path, watch, fingerprint, job.id, st, sha):
                return None
        return _Taken(job, watch, fingerprint, st.st_size, st.st_mtime, sha)

    def _on_batch(self, paths: list[Path]) -> None:
        self.current = _Current(tuple(str(p) for p in paths), time.monotonic())
        structlog.contextvars.clear_contextvars()
        if len(paths) == 1:
            structlog.contextvars.bind_contextvars(path=str(paths[0]))
        else:
            structlog.contextvars.bind_contextvars(paths=[str(p) for p in paths])

    def _fail(self, job_id: int, error: str, transient: bool) -> str:
        s = self.config.state
        return self.journal.failed(job_id, error, transient, s.max_attempts, s.retry_base_seconds,
                                   s.retry_max_seconds)

    def _record(self, taken: _Taken, result: FileResult) -> None:
        job = taken.job
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(path=job.path, job_id=job.id)
        self.processed += result.status != "skipped"
        if result.status == "failed":
            state = self._fail(job.id, result.error or "unknown error", result.transient)
            self.log.warning("job_failed", state=state, error=result.error, transient=result.transient,
                             seconds=round(result.seconds, 3))
            return
        self.journal.done(job.id, result.sha256, taken.fingerprint, result.seconds, taken.size, taken.mtime)
        self.log.info("job_done", status=result.status, tasks=list(result.tasks_run),
                      seconds=round(result.seconds, 3), outputs=len(result.outputs),
                      pages_resumed=result.pages_resumed)

    def _adopt_renamed(self, path: Path, watch: WatchConfig, fingerprint: str, job_id: int, st, sha: str) -> bool:
        """A file (with no sidecar of its own) whose content the journal knows under a vanished
        name gets that name's sidecars."""
        for old in self.journal.by_sha(sha):
            if old.path == str(path) or os.path.exists(old.path) or old.fingerprint != fingerprint:
                continue
            old_watch = self.pipeline.config.watch_for(Path(old.path)) or watch
            moved = relocate(Target.for_media(Path(old.path), old_watch.output, old_watch.path),
                             Target.for_media(path, watch.output, watch.path),
                             {"path": str(path), "size": st.st_size, "mtime": st.st_mtime})
            if moved:
                self.journal.forget(old.path)
                self.journal.done(job_id, sha, fingerprint, 0.0, st.st_size, st.st_mtime)
                self.log.info("job_done", status="renamed", renamed_from=old.path, outputs=len(moved))
                return True
        return False

    # --- the supervisor ------------------------------------------------------------------------

    def worker_healthy(self) -> bool:
        """Alive and either idle or inside the per-item time limit: what earns a WATCHDOG=1."""
        if not self.worker.is_alive():
            return False
        current = self.current
        limit = self.config.state.item_timeout * len(current.paths) if current else 0.0
        return current is None or time.monotonic() - current.started < limit

    def supervise(self) -> None:
        interval = watchdog_interval()
        last_ping = last_rescan = last_health = last_status = time.monotonic()
        observers_ok = True
        while not self.stop_event.wait(0.2):
            now = time.monotonic()
            if self.reload_event.is_set():
                self.reload_event.clear()
                self.reload()
            for armed in self.watches.armed:
                for path, forced in armed.tracker.due():
                    if forced:
                        self.log.warning("taken_while_changing", path=str(path),
                                         max_settle_seconds=armed.watch.max_settle_seconds)
                    self._enqueue(armed.watch, path, LIVE)
            if now - last_health >= HEALTH_INTERVAL:
                last_health = now
                observers_ok = self.watches.healthy()
            if now - last_rescan >= self.config.state.rescan_interval:
                last_rescan = now
                self.scan_all()
            if interval and now - last_ping >= interval and observers_ok and self.worker_healthy():
                last_ping = now
                notify("WATCHDOG=1")
            if now - last_status >= 2.0:
                last_status = now
                self._status_line()
            current = self.current
            if current and not current.overdue_logged and not self.worker_healthy():
                current.overdue_logged = True  # once per batch; the stopped WATCHDOG pings do the rest
                self.log.error("job_over_time_limit", paths=list(current.paths),
                               item_timeout=self.config.state.item_timeout)

    def _status_line(self) -> None:
        counts = self.journal.counts()
        hour, _ = self.journal.done_since(time.time() - 3600)
        model = "loaded" if self.runtime.loaded else "not loaded"
        notify(f"STATUS=queue {counts['pending'] + counts['running']}, done last hour {hour}, "
               f"failed {counts['failed'] + counts['quarantined']}, model {model}")
        self._write_meta()

    def _write_meta(self) -> None:
        self.journal.set_meta("daemon", json.dumps({
            "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "model": self.config.model.source, "model_loaded": self.runtime.loaded,
            "device": self.runtime.device, "config": str(self.config_path),
            "watches": [{"path": str(a.watch.path), "mode": a.mode, "reason": a.reason,
                         "available": a.available} for a in self.watches.armed],
        }))

    def reload(self) -> None:
        """SIGHUP: a valid new config replaces the old one; an invalid one is refused."""
        notify("RELOADING=1")
        try:
            config, registry = load_checked(self.config_path)
        except (ConfigError, PluginError) as exc:
            self.log.error("reload_refused", error=str(exc))
            notify("READY=1")
            return
        runtime = self.runtime if config.model == self.config.model else create_runtime(config.model, config.runtime)
        self.watches.stop()
        self.config, self.registry, self.runtime = config, registry, runtime
        self.pipeline = Pipeline(config, registry, runtime)
        if config.model.preload and not runtime.loaded:
            self._load_model()
        self.watches = WatchSet(config.watches, self._on_dir, self.log)
        self.watches.start()
        self.scan_all()
        self.log.info("reloaded", watches=len(config.watches))
        notify("READY=1")

    def shutdown(self) -> None:
        notify("STOPPING=1")
        self.log.info("stopping")
        self.watches.stop()
        self.wake.set()
        self.worker.join(timeout=STOP_GRACE_SECONDS)
        if self.worker.is_alive():
            for taken in list(self.taken.values()):
                self.journal.release(taken.job.id)
                self.log.warning("job_released", path=taken.job.path, reason="still running at shutdown")
        self.journal.close()
        self.log.info("stopped", processed=self.processed)


def cmd_run(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    logs.configure(config.logging.level, config.logging.format)
    daemon = Daemon(args.config)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop_event.set())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload_event.set())
    try:
        daemon.start(config, registry)
    except (JournalError, ModelLoadError) as exc:
        daemon.log.error("start_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    daemon.supervise()
    daemon.shutdown()
    return 0


# --- operations commands -------------------------------------------------------------------------

def _journal_for(args: argparse.Namespace) -> tuple[Config, Journal]:
    config = configmod.load(args.config)
    return config, Journal(config.state.db)


def _daemon_info(journal: Journal) -> dict[str, Any]:
    info = json.loads(journal.meta("daemon") or "{}")
    pid = info.get("pid")
    info["running"] = bool(pid) and Path(f"/proc/{pid}").exists() and _lock_held(journal)
    return info


def _lock_held(journal: Journal) -> bool:
    import fcntl

    lock = journal.path.with_name(journal.path.name + ".lock")
    if not lock.exists():
        return False
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def cmd_status(args: argparse.Namespace) -> int:
    config, journal = _journal_for(args)
    counts = journal.counts()
    done_hour, busy = journal.done_since(time.time() - 3600)
    failures = [{"path": j.path, "state": j.state, "attempts": j.attempts, "error": j.last_error}
                for j in journal.jobs("state IN ('failed', 'quarantined')")]
    daemon = _daemon_info(journal)
    status = {
        "db": str(config.state.db), "daemon_running": daemon["running"], "pid": daemon.get("pid"),
        "queue": counts, "done_last_hour": done_hour,
        "throughput_per_min": round(done_hour / busy * 60, 2) if busy else None,
        "model": config.model.source, "model_loaded": bool(daemon.get("model_loaded")) and daemon["running"],
        "watches": daemon.get("watches") or [{"path": str(w.path), "mode": "not running"} for w in config.watches],
        "failures": failures,
    }
    journal.close()
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    print(f"daemon: {'running, pid ' + str(status['pid']) if status['daemon_running'] else 'not running'}")
    print(f"model: {status['model']} ({'loaded' if status['model_loaded'] else 'not loaded'})")
    print("queue: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"done in the last hour: {done_hour}"
          + (f" ({status['throughput_per_min']}/min of busy time)" if status["throughput_per_min"] else ""))
    for w in status["watches"]:
        print(f"watch {w['path']}: {w.get('mode')}" + (f" ({w['reason']})" if w.get("reason") else ""))
    for f in failures:
        print(f"{f['state']} {f['path']} (attempts {f['attempts']}): {f['error']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    path = Path(args.file).expanduser().absolute()
    watch = config.watch_for(path)
    lines = [f"file: {path}"]
    if watch is None:
        lines.append("watch: none — the file lies outside every configured watch; it would not be processed")
        print("\n".join(lines))
        return 1
    why_not = MediaFilter(watch).reason(path)
    pipeline = Pipeline(config, registry, create_runtime(config.model, config.runtime))
    target = Target.for_media(path, watch.output, watch.path)
    lines += [
        f"watch: {watch.path} (recursive {watch.recursive}, include {list(watch.include) or 'all'}, "
        f"exclude {list(watch.exclude) or 'none'})",
        f"filter: {'accepted' if why_not is None else 'not input: ' + why_not}",
        "tasks: " + ", ".join(f"{p.task.name} (fingerprint {p.fingerprint})" for p in pipeline.planned(watch)),
        f"outputs: {', '.join(watch.outputs)}; JSON sidecar {target.json_path}; policy {watch.output.policy}",
    ]
    journal = Journal(config.state.db)
    job = journal.get(str(path))
    journal.close()
    fingerprint = pipeline.fingerprint(watch)
    if job is None:
        lines.append("journal: no entry")
    else:
        lines.append(f"journal: {job.state}, attempts {job.attempts}"
                     + (f", last error: {job.last_error}" if job.last_error else ""))
    lines.append("verdict: " + _verdict(path, why_not, job, fingerprint))
    print("\n".join(lines))
    return 0


def _verdict(path: Path, why_not: str | None, job, fingerprint: str) -> str:
    if not path.exists():
        return "the file does not exist"
    if why_not is not None:
        return f"would not be processed ({why_not})"
    if job is None:
        return "would be processed (not in the journal yet)"
    if job.state == "done":
        st = path.stat()
        if (job.size, job.mtime) != (st.st_size, st.st_mtime):
            return "would be processed again (the file changed since)"
        if job.fingerprint != fingerprint:
            return "results are stale (tasks, prompts or model changed): `smolvlm-watch backfill --stale` queues it"
        return "up to date; nothing to do"
    if job.state in ("failed", "quarantined"):
        return f"{job.state}; `smolvlm-watch retry {path}` queues it again once the cause is fixed"
    return f"{job.state}: the daemon will process it"


def _under(path: str | None) -> tuple[str, tuple]:
    if not path:
        return "1", ()
    p = str(Path(path).expanduser().absolute())
    return "(path = ? OR path LIKE ?)", (p, p.rstrip("/") + "/%")


def cmd_backfill(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    journal = Journal(config.state.db)
    pipeline = Pipeline(config, registry, create_runtime(config.model, config.runtime))
    mode = "all" if args.all else "stale" if args.stale else "missing"
    where, params = _under(args.path)
    queued = 0
    if mode == "stale":
        for watch in config.watches:
            fp = pipeline.fingerprint(watch)
            queued += journal.requeue(f"state = 'done' AND watch = ? AND fingerprint != ? AND {where}",
                                      (str(watch.path), fp, *params))
    else:
        files = [(w, p) for w in config.watches for p in scan(w)
                 if not args.path or str(p).startswith(str(Path(args.path).expanduser().absolute()))]
        progress = Progress(len(files), unit="files scanned")
        for watch, path in files:
            st = path.stat()
            queued += journal.enqueue(str(path), str(watch.path), st.st_size, st.st_mtime, BACKFILL,
                                      force=mode == "all")
            progress.advance()
        progress.close()
    journal.close()
    print(f"backfill --{mode}: queued {queued} file(s); the running daemon processes them after live files"
          " (`smolvlm-watch status` shows progress)")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    config, journal = _journal_for(args)
    if not args.all and not args.path:
        print("error: name a PATH or give --all", file=sys.stderr)
        return 2
    where, params = _under(None if args.all else args.path)
    n = journal.requeue(f"state IN ('failed', 'quarantined') AND {where}", params)
    journal.close()
    print(f"re-queued {n} failed file(s)")
    return 0


def add_commands(sub: Any) -> None:
    """Register the daemon's subcommands on the main parser."""
    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", default=os.environ.get("SMOLVLM_WATCH_CONFIG", "config.yaml"),
                       help="config file (default: $SMOLVLM_WATCH_CONFIG or ./config.yaml)")

    r = sub.add_parser("run", help="run the daemon: watch, queue, process")
    config_arg(r)
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("status", help="queue depth, throughput, failures, watches")
    config_arg(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    e = sub.add_parser("explain", help="which watch, rules, tasks and outputs apply to a file, and why")
    config_arg(e)
    e.add_argument("file")
    e.set_defaults(func=cmd_explain)
    b = sub.add_parser("backfill", help="queue files with missing or stale results")
    config_arg(b)
    g = b.add_mutually_exclusive_group()
    g.add_argument("--missing", action="store_true", help="files without results (default)")
    g.add_argument("--stale", action="store_true", help="results from older prompts, plugins or models")
    g.add_argument("--all", action="store_true", help="everything, recomputed")
    b.add_argument("path", nargs="?")
    b.set_defaults(func=cmd_backfill)
    t = sub.add_parser("retry", help="re-queue failed and quarantined files")
    config_arg(t)
    t.add_argument("path", nargs="?")
    t.add_argument("--all", action="store_true")
    t.set_defaults(func=cmd_retry)
    from .doctor import cmd_doctor

    d = sub.add_parser("doctor", help="check config, model, permissions, inotify limits, disk and device")
    config_arg(d)
    d.set_defaults(func=cmd_doctor)
