"""The daemon: watches armed, journal open, one worker that owns the model.

Three parts, as in huey's consumer, each with a one-tick method tests can drive:

- ``WorkQueue``: the journal as the worker sees it: due jobs leased and checked (vanished?
  only renamed?), results recorded, what was taken but not run given back.
- ``Worker``: streams due jobs through the pipeline (the next files decode while the model
  runs; the files decoded by then share a batch); ``tick()`` drains the queue once. Its
  heartbeat is what the systemd watchdog rule reads.
- ``Supervisor``: the main thread; ``tick(now)`` turns settled paths into jobs, checks what the
  observers saw vanish, keeps the observers alive, rescans, reloads on SIGHUP, and talks to
  systemd.

``Daemon`` builds all of them whole on construction (journal, model, watches armed, first scan)
and ``serve()`` runs them until a stop is asked for.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import structlog

from . import jsontext
from .config import Address, Config, ConfigError, WatchConfig
from .daemon_record import META_KEY, DaemonRecord, WatchRecord
from .engine import Engine, Interrupted, ModelLoadError, Outage, Unreachable
from .journal import LIVE, Finished, Job, Journal, JournalError, RetryPolicy
from .media import sha256_file
from .media.base import MediaError
from .httpd import Handler, ListenError, Server, bound, routed
from .metrics import Metrics, routes
from .notify import notify, watchdog_interval
from .pipeline import FileJob, FileResult, Pipeline
from .plugins import PluginError, Registry
from .reconcile import Reconciler
from .sidecar import Target
from .watcher import ArmedWatch, Device, WatchSet

CANCEL_GRACE_SECONDS = 5.0  # after the stop grace: the model is cancelled, and has this long to let go
RESCAN_STOP_GRACE_SECONDS = 5.0  # a rescan still walking at shutdown: waited for this long, then left to fail
HEALTH_INTERVAL = 5.0
STATUS_INTERVAL = 2.0
STARTUP_SCAN_EXTEND_USEC = 1_800_000_000  # the start time systemd grants the catch-up scan (TimeoutStartSec)
QUIET_RESCAN_CEILING = 3600.0  # seconds: how far quiet rescans stretch the interval (Syncthing rescans hourly)

Loader = Callable[[], "tuple[Config, Registry]"]


@dataclass(frozen=True)
class Taken:
    """A leased job on its way through the pipeline, with the file's state when it was taken
    (recorded on success: a file that changed meanwhile is seen as changed)."""

    job: Job
    watch: WatchConfig
    fingerprint: str
    size: int
    mtime: float
    sha256: str | None  # when the rename check hashed the file already: prepare need not again


class Heartbeat:
    """When the worker last made progress, and how many files it has in hand: a worker that
    is busy and silent for longer than the files' time limits allow is wedged. ``clock`` is
    the daemon's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.busy_since: float | None = None
        self.files = 0
        self.overdue_logged = False

    def beat(self, files: int) -> None:
        self.busy_since, self.files, self.overdue_logged = self.clock(), files, False

    def idle(self) -> None:
        self.busy_since, self.files = None, 0

    def overdue(self, item_timeout: float) -> bool:
        since = self.busy_since
        return since is not None and self.clock() - since >= item_timeout * max(1, self.files)


class JournalHealth:
    """Whether the journal can be written now. A full or read-only disk under the state folder
    stops the daemon from recording anything, but not from running: it says so once, keeps
    trying, and says so again when the journal is back. Jobs it could not record stay `running`
    and are taken again when their lease runs out (their sidecars, if written, are found current)."""

    RETRY_SECONDS = 2.0

    def __init__(self, log: Any):
        self.log = log
        self.problem: str | None = None

    def down(self, exc: Exception) -> None:
        if self.problem is None:
            self.log.error("journal_unwritable", error=str(exc))
        self.problem = str(exc)

    def up(self) -> None:
        """A write went through (the supervisor's status line writes one every 2 s)."""
        if self.problem is not None:
            self.log.info("journal_writable_again")
        self.problem = None


class WorkQueue:
    """Due jobs, checked and handed to the pipeline; their results recorded in the journal."""

    def __init__(self, journal: Journal, reconciler: Reconciler, config: Callable[[], Config], log: Any,
                 metrics: Metrics):
        self.journal, self.reconciler, self.config, self.log = journal, reconciler, config, log
        self.metrics = metrics
        self.taken: dict[str, Taken] = {}  # leased and not yet recorded, by path

    def jobs(self, pipeline: Pipeline, running: Callable[[], bool], beat: Heartbeat) -> Iterator[FileJob]:
        """Due jobs, live before backfill, while there are any and ``running()``. A job that was
        running when a daemon died runs alone, in a stream of its own."""
        while running():
            job = self.journal.lease(self.config().state.lease_seconds)
            if job is None:
                return
            if job.path in self.taken:
                continue  # its lease ran out while it waited to run; it is ours already
            if job.interrupted and self.taken:
                self.journal.release(job.id)  # it runs alone, once the files in flight are done
                return
            beat.beat(len(self.taken) + 1)
            _bind(path=job.path, job_id=job.id)
            taken = self._admit(job, pipeline)
            if taken is not None:
                self.taken[job.path] = taken
                yield FileJob(Path(job.path), taken.watch, job.force, taken.sha256)
            if job.interrupted:
                return  # alone: if it kills the daemon again, no file beside it shares the blame

    def _admit(self, job: Job, pipeline: Pipeline) -> Taken | None:
        """A job worth running, or None when it was settled here: the file vanished or left every
        watch, or it is a known file under a new name whose sidecars are simply moved. One
        job's trouble is that job's failure."""
        try:
            return self._check(job, pipeline)
        except MediaError as exc:
            self.fail(job.id, exc.reason, exc.transient)
        except Exception as exc:  # the worker must survive any file: one job's trouble is that job's failure
            self.log.exception("job_crashed", error=str(exc))
            self.fail(job.id, f"internal error: {type(exc).__name__}: {exc}", transient=True)
        return None

    def _check(self, job: Job, pipeline: Pipeline) -> Taken | None:
        path = Path(job.path)
        watch = pipeline.config.watch_for(path)
        if watch is None or not os.path.lexists(path):
            self.journal.mark_gone(job.id)
            self.log.info("job_dropped", reason="file vanished" if watch else "no longer in any watch")
            return None
        st = path.stat()
        fingerprint = pipeline.fingerprint(watch)
        sha = None
        if not job.force and not os.path.lexists(Target.for_media(path, watch.output, watch.path).json_path):
            sha = sha256_file(path)
            if self.reconciler.adopt_renamed(pipeline.config, path, watch, fingerprint, job.id, st, sha):
                return None
        return Taken(job, watch, fingerprint, st.st_size, st.st_mtime, sha)

    def record(self, file_job: FileJob, result: FileResult) -> None:
        """A taken job's result, into the journal."""
        taken = self.taken.pop(str(file_job.path))
        job = taken.job
        _bind(path=job.path, job_id=job.id)
        if result.status == "failed":
            state = self.fail(job.id, result.error or "unknown error", result.transient)
            self.log.warning("job_failed", state=state, error=result.error, transient=result.transient,
                             seconds=round(result.seconds, 3))
            self.metrics.file_finished(str(taken.watch.path), state, result.tasks_run)
            return
        processed = result.status == "done"
        state = self.journal.done(job.id, Finished(
            result.sha256, taken.fingerprint, result.seconds if processed else 0.0, taken.size, taken.mtime,
            result.outputs, list(result.passages) if result.passages is not None else None, result.kind))
        self.metrics.file_finished(str(taken.watch.path), result.status, result.tasks_run)
        self.log.info("job_done", status=result.status, tasks=list(result.tasks_run),
                      seconds=round(result.seconds, 3), outputs=len(result.outputs),
                      pages_resumed=result.pages_resumed)
        if state == "pending":
            self.log.info("job_requeued", reason="the file changed while it was being processed")

    def fail(self, job_id: int, error: str, transient: bool) -> str:
        s = self.config().state
        return self.journal.failed(job_id, error, transient, RetryPolicy(s.max_attempts, s.retry_base_seconds,
                                                                         s.retry_max_seconds))

    def release_all(self, why: str | None = None) -> None:
        """Taken but not run (a stop, a reload, a cancelled model): back to pending, no attempt counted."""
        for taken in self.taken.values():
            self.journal.release(taken.job.id)
            if why:
                self.log.warning("job_released", path=taken.job.path, reason=why)
        self.taken.clear()

    def fail_all(self, error: str) -> None:
        for taken in self.taken.values():
            self.fail(taken.job.id, error, transient=True)
        self.taken.clear()


class Worker:
    """The one thread that owns the pipeline and, through it, the model."""

    def __init__(self, queue: WorkQueue, pipeline: Pipeline, stopping: threading.Event, health: JournalHealth,
                 log: Any, clock: Callable[[], float] = time.monotonic):
        self.queue, self.pipeline, self.stopping, self.health, self.log = queue, pipeline, stopping, health, log
        self.wake = threading.Event()
        self.heartbeat = Heartbeat(clock)
        self.outage = Outage(log)
        self.processed = 0
        self.thread: threading.Thread | None = None

    def tick(self) -> int:
        """Stream due jobs until the queue is empty, a stop is asked for, or a reload swapped the
        pipeline (what was taken finishes with the pipeline it started with). Returns how many
        results were recorded."""
        pipeline = self.pipeline
        done = 0
        try:
            for result in pipeline.process_many(
                    self.queue.jobs(pipeline, lambda: self._running(pipeline), self.heartbeat),
                    pages=self.queue.journal, on_batch=self._on_batch,
                    stop=lambda: not self._running(pipeline)):
                self.queue.record(*result)
                self.processed += result[1].status != "skipped"
                done += 1
                self.heartbeat.beat(len(self.queue.taken))
        except Unreachable as exc:
            self.queue.release_all()  # not the files' fault: no attempt counted
            self.outage.down(str(exc), exc.retry_after)
        except Interrupted:
            self.queue.release_all("the model was stopped while it ran (the daemon is stopping)")
        except ModelLoadError as exc:  # model.preload off: the first file found the model unloadable
            self.log.error("model_load_failed", error=str(exc))
            self.queue.fail_all(str(exc))  # transient: retried with back-off, and quarantined if it lasts
        except JournalError:
            self.queue.taken.clear()  # still `running` in the journal: taken again when their lease runs out
            raise
        except Exception as exc:  # the worker must survive any batch
            self.log.exception("batch_crashed", error=str(exc))
            self.queue.fail_all(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.heartbeat.idle()
            structlog.contextvars.clear_contextvars()
        self.queue.release_all()  # taken but not run: a stop or a reload came first
        return done

    def _running(self, pipeline: Pipeline) -> bool:
        return not self.stopping.is_set() and self.pipeline is pipeline

    def _on_batch(self, paths: list[Path]) -> None:
        self.heartbeat.beat(len(paths))
        self.queue.metrics.batch_started(len(paths))
        if len(paths) == 1:
            _bind(path=str(paths[0]))
        else:
            _bind(paths=[str(p) for p in paths])

    def reachable(self, now: float | None = None) -> bool:
        """False while the model server is out of reach; at each probe time, asks it again."""
        return self.outage.reachable(self.pipeline.engine, now)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self.reachable():
                    wait = max(0.05, self.outage.next_probe - time.monotonic())
                else:
                    done = self.tick()
                    wait = self._idle_wait() if not done else 0.0
            except JournalError as exc:
                self.health.down(exc)
                wait = JournalHealth.RETRY_SECONDS
            if wait:
                self.wake.wait(wait)
                self.wake.clear()

    def _idle_wait(self) -> float:
        due = self.queue.journal.next_due()
        return 0.5 if due is None else min(0.5, max(0.01, due))

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="worker", daemon=True)
        self.thread.start()

    def trouble(self, item_timeout: float) -> str | None:
        """Why the worker does not earn a WATCHDOG=1 now, or None: it must be alive, and idle or
        making progress within the files' time limits. The clock runs from the moment a job is
        taken (decoding can wedge too)."""
        if self.thread is not None and not self.thread.is_alive():
            return "the worker thread has stopped"
        if self.heartbeat.overdue(item_timeout):
            return f"a job has run longer than state.item_timeout ({item_timeout:g} s)"
        return None

    def healthy(self, item_timeout: float) -> bool:
        return self.trouble(item_timeout) is None


class RescanPace:
    """How long the safety rescan waits. ``state.rescan_interval`` is the shortest wait and the
    first: a rescan that queues nothing (every change reached us as an event) doubles the wait, up
    to an hour (``QUIET_RESCAN_CEILING``, or the configured interval when that is longer); one that
    queues files (events missed them, or a sidecar was deleted by hand), or a watch on polling (a
    share, where changes are the likeliest to slip by), brings it back to the configured interval.
    Where events work, rescans are a safety net: a library left alone costs a walk an hour."""

    def __init__(self) -> None:
        self.stretch = 1.0  # the wait, in configured intervals

    def wait(self, interval: float) -> float:
        return min(interval * self.stretch, max(interval, QUIET_RESCAN_CEILING))

    def after(self, interval: float, queued: int, polling: bool) -> float:
        """Record how a rescan went; the next wait."""
        quiet = not queued and not polling
        self.stretch = min(self.stretch * 2, max(1.0, QUIET_RESCAN_CEILING / interval)) if quiet else 1.0
        return self.wait(interval)


class Supervisor:
    """The main loop's one tick, and what it keeps between ticks."""

    def __init__(self, daemon: Daemon):
        self.d = daemon
        self.pace = RescanPace()
        self.interval = watchdog_interval()
        now = daemon.clock()
        self.last_ping = self.last_rescan = self.last_health = self.last_status = now
        self._rescan: threading.Thread | None = None  # the safety rescan, off this loop: live files never wait for it

    def tick(self, now: float | None = None) -> None:
        """Reload if asked, hand settled files to the queue, and run what is due: the health
        check, the safety rescan (on a thread of its own), the watchdog ping, the status line
        and the rescans asked for. ``now`` is the daemon's clock (tests pass a fake one's)."""
        d = self.d
        now = d.clock() if now is None else now
        if d.reload_requested.is_set():
            d.reload_requested.clear()
            d.reload()
        for armed in d.watches.armed:
            self._settled(armed, now)
            d.reconciler.gone(armed)
        if now - self.last_health >= HEALTH_INTERVAL:
            self.last_health = now
            d.watches.healthy()
        if now - self.last_rescan >= self.pace.wait(d.config.state.rescan_interval) and not self.rescanning():
            self.last_rescan = now
            self._start_rescan(paced=True)
        healthy = d.worker.healthy(d.config.state.item_timeout)
        if self.interval and now - self.last_ping >= self.interval and healthy:
            self.last_ping = now
            notify("WATCHDOG=1")
        if now - self.last_status >= STATUS_INTERVAL:
            self.last_status = now
            self._asked(now)
            d.status_line()
            d.health.up()  # the status line writes the journal: it takes writes again
        beat = d.worker.heartbeat
        if not healthy and not beat.overdue_logged:
            beat.overdue_logged = True  # once per stall; the stopped WATCHDOG pings do the rest
            d.log.error("job_over_time_limit", paths=list(d.queue.taken), item_timeout=d.config.state.item_timeout)

    def rescanning(self) -> bool:
        return self._rescan is not None and self._rescan.is_alive()

    def wait_rescan(self, timeout: float | None = None) -> bool:
        """Wait for the rescan in progress, if any; False when it still runs after ``timeout``.
        Shutdown waits a little, so the journal is not closed under a walk; tests wait for the
        rescan a tick started before they look at its result."""
        if self._rescan is not None:
            self._rescan.join(timeout)
        return not self.rescanning()

    def _asked(self, now: float) -> None:
        """``smolvlm-watch rescan [SUBPATH]`` (or the web page's Rescan): taken when no rescan
        runs; a request for every watch restarts the interval."""
        if self.rescanning():
            return
        asked = self.d.journal.take_rescan()
        if not asked:
            return
        self.d.log.info("rescan_asked", under=[a or "every watch" for a in asked])
        if None in asked:
            self.last_rescan = now
        self._start_rescan(None if None in asked else [a for a in asked if a is not None])

    def _start_rescan(self, under: list[str] | None = None, paced: bool = False) -> None:
        """A rescan (of every watch, or of the folders ``under``) on a thread of its own; a
        ``paced`` one (the safety rescan) sets the wait before the next (``RescanPace``)."""
        self._rescan = threading.Thread(target=self._scan_all, args=(under, paced), name="rescan", daemon=True)
        self._rescan.start()

    def _scan_all(self, under: list[str] | None, paced: bool) -> None:
        d = self.d
        try:
            queued = d.scan_all(under)
            if paced:
                interval = d.config.state.rescan_interval
                wait = self.pace.after(interval, queued, any(a.mode == "polling" for a in d.watches.armed))
                d.log.debug("rescan_paced", next_in_seconds=wait, configured=interval)
        except JournalError as exc:
            if d.stopping.is_set():
                return  # a walk that outlived the stop grace: the journal closed under it, nothing was lost
            d.health.down(exc)
        except Exception as exc:  # the next rescan tries again; the daemon must not lose its loop
            d.log.exception("rescan_failed", error=str(exc))

    def trouble(self) -> str | None:
        """What is wrong in words (``/healthz``): None while all is well. Only a stuck worker
        stops the watchdog pings (a restart can cure it); a folder that is missing or not
        mounted, a watch that missed live events, a model server out of reach are shown here
        and in ``status`` while they last, but restarting the daemon would not bring them back."""
        why = self.d.worker.trouble(self.d.config.state.item_timeout) or self.d.worker.outage.describe()
        if why is not None:
            return why
        watches = [f"watch {a.watch.path} unavailable: {a.unavailable}" if a.unavailable
                   else f"watch {a.watch.path}: {a.degraded}" for a in self.d.watches.armed
                   if a.unavailable or a.degraded]
        return "; ".join(watches) or None

    def _settled(self, armed: ArmedWatch, now: float) -> None:
        d = self.d
        due = armed.tracker.due(now)
        for i, (path, forced) in enumerate(due):
            if forced:
                d.log.warning("taken_while_changing", path=str(path), max_settle_seconds=armed.watch.max_settle_seconds)
            try:
                queued = d.reconciler.enqueue(armed.watch, path, LIVE)
            except JournalError:
                for later, _ in due[i:]:
                    armed.tracker.touch(later)  # not lost: offered again once the journal takes writes
                raise
            if queued:
                d.worker.wake.set()

    def run(self) -> None:
        while not self.d.stopping.wait(0.2):
            try:
                self.tick()
            except JournalError as exc:
                self.d.health.down(exc)


class Daemon:
    """Everything the daemon is, built whole: construction opens the journal (taking its lock),
    loads the model (``model.preload``), arms every watch and reconciles the journal with the
    folders. ``serve()`` then runs the worker thread and the supervisor loop until ``stop()``."""

    def __init__(self, config_path: str | Path, loader: Loader, loaded: tuple[Config, Registry] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config_path = Path(config_path)
        self.clock = clock  # settle times and the supervisor's intervals (a test's fake clock drives them)
        self.loader = loader  # read again at every reload
        self.log = structlog.get_logger("smolvlm_watch.daemon")
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.started = time.time()
        self.clean_exit = True
        self.restart_needed: str | None = None  # what the last refused reload would need a restart for
        self.http: list[Server] = []
        self.web: Any = None  # the web page's pages and their read connection, while web.listen is set
        self.config, self.registry = loaded or loader()
        self.journal = Journal(self.config.state.db, exclusive=True)
        opened = [self.journal]
        try:
            self.scan_reader = Journal(self.config.state.db, readonly=True)  # a scan's big reads (Reconciler)
            opened.append(self.scan_reader)
            self._build()
        except BaseException:
            for journal in opened:
                journal.close()
            raise

    def _build(self) -> None:
        recovered = self.journal.recover(self.config.state.max_attempts)
        if recovered:
            self.log.warning("recovered_interrupted_jobs", count=recovered)
        self.engine = self._engine(self.config, self.registry)
        self.pipeline = Pipeline(self.config, self.registry, self.engine)
        self.reconciler = Reconciler(self.journal, self.log, lambda: self.registry.task_objects, self.scan_reader)
        self.metrics = Metrics(DaemonView(self))
        self.queue = WorkQueue(self.journal, self.reconciler, lambda: self.config, self.log, self.metrics)
        self.health = JournalHealth(self.log)
        self.worker = Worker(self.queue, self.pipeline, self.stopping, self.health, self.log, self.clock)
        self.watches = self._arm(self.config)
        self._catch_up()
        self.write_meta()
        self.supervisor = Supervisor(self)

    def _catch_up(self) -> None:
        """The startup scan, before READY=1. A million files take about a minute on a warm disk
        and longer cold: systemd is asked for half an hour more of start time first, so a big
        library's start is never killed at ``TimeoutStartSec`` and restarted into the same scan."""
        notify(f"EXTEND_TIMEOUT_USEC={STARTUP_SCAN_EXTEND_USEC}\nSTATUS=scanning "
               + ", ".join(str(w.path) for w in self.config.watches) + " for changes since the last run")
        start = time.monotonic()
        queued = self.scan_all()
        self.log.info("startup_scan_done", files_queued=queued, seconds=round(time.monotonic() - start, 1))

    def _engine(self, config: Config, registry: Registry) -> Engine:
        engine = registry.engine(config)
        if config.model.preload:
            notify("EXTEND_TIMEOUT_USEC=600000000\nSTATUS=loading model " + config.model.source)
            self.log.info("model_loading", model=config.model.source)
            t0 = time.monotonic()
            engine.load()
            info = engine.info()
            self.log.info("model_loaded", model=config.model.source, device=info.device, dtype=info.dtype,
                          seconds=round(time.monotonic() - t0, 2))
        return engine

    def _arm(self, config: Config) -> WatchSet:
        watches = WatchSet(config.watches, self.reconciler.on_dir, self.log, self._devices(),
                           canary_dir=config.state.db.parent, clock=self.clock)
        watches.start()
        return watches

    def _devices(self) -> dict[str, Device]:
        raw = json.loads(self.journal.meta("devices") or "{}")
        return {path: Device.from_dict(d) for path, d in raw.items()}

    # --- running ---------------------------------------------------------------------------------

    def serve(self) -> None:
        self.http = self._listen()
        self.worker.start()
        notify("READY=1\nSTATUS=watching " + ", ".join(str(w.path) for w in self.config.watches))
        self.log.info("ready", watches=len(self.config.watches), db=str(self.config.state.db),
                      model=self.config.model.source, model_loaded=self.engine.loaded)
        self.supervisor.run()
        self.clean_exit = self.shutdown()

    def _listen(self) -> list[Server]:
        """The metrics (metrics.listen) and the web page (web.listen), one server per address,
        up before READY: a port in use fails the start."""
        servers = []
        for address, (key, handler, paths) in self._wanted(self.config).items():
            server = bound(address, handler, key, str(self.config_path))
            server.start()
            servers.append(server)
            self.log.info("http_listening", address=str(server.address), paths=paths)
        return servers

    def _wanted(self, config: Config) -> dict[Address, tuple[str, Handler, list[str]]]:
        """Each address to serve, with the key that asks for it, its handler and its paths. The
        web page reads the journal through a connection of its own (a heavy search never holds
        the worker's or the scraper's)."""
        from .web import Web, token

        wanted: dict[Address, tuple[str, dict[str, Handler], Handler | None]] = {}
        if config.metrics.listen is not None:
            wanted[config.metrics.listen] = ("metrics.listen", routes(self.metrics), None)
        if config.web.listen is not None:
            self.web = Web(config, self.journal, token(config), Journal(config.state.db, readonly=True))
            name, table, _ = wanted.get(config.web.listen, ("web.listen", {}, None))
            wanted[config.web.listen] = (name, table, self.web.handle)
        return {address: (key, routed(table, page), [*table, *(["/ (web page)"] if page else [])])
                for address, (key, table, page) in wanted.items()}

    def _close_web(self) -> None:
        if self.web is not None:
            self.web.reader.close()
            self.web = None

    def _relisten(self, config: Config) -> None:
        """A reload's listeners: an address kept gets the new handler in place (a new token, new
        watches take effect at once); a moved or removed one is closed; a new one is bound (a
        port in use is logged, and status says a restart is needed). The old pages' read
        connection is closed once no server hands it requests any more."""
        old_web = self.web
        wanted = self._wanted(config)
        kept = []
        for server in self.http:
            asked = next((a for a in (server.address, Address(server.address.host, 0)) if a in wanted), None)
            if asked is None:
                server.stop()
                self.log.info("http_closed", address=str(server.address))
                continue
            server.handler = wanted.pop(asked)[1]
            kept.append(server)
        for address, (key, handler, paths) in wanted.items():
            try:
                server = bound(address, handler, key, str(self.config_path))
            except ListenError as exc:
                self.restart_needed = str(exc)
                self.log.error("reload_listen_failed", error=self.restart_needed)
                continue
            server.start()
            kept.append(server)
            self.log.info("http_listening", address=str(server.address), paths=paths)
        self.http = kept
        if old_web is not None and old_web is not self.web:
            old_web.reader.close()
        if config.web.listen is None:
            self._close_web()

    def tick(self, now: float | None = None) -> None:
        """One round of the supervisor (tests drive the daemon with it)."""
        self.supervisor.tick(now)

    def stop(self) -> None:
        """Stop taking work (a signal handler may call this)."""
        self.stopping.set()
        self.worker.wake.set()

    def scan_all(self, under: list[str] | None = None) -> int:
        """Reconcile the journal with every available watch (see ``Reconciler.scan``), or only
        with the folders ``under`` (each inside a watch)."""
        if under is None:
            queued = sum(self.reconciler.scan(armed) for armed in self.watches.armed)
        else:
            queued = sum(self.reconciler.scan(armed, Path(folder)) for folder in under
                         for armed in self.watches.armed if armed.watch.contains(Path(folder)))
        if queued:
            self.log.info("scan_queued", files=queued)
            self.worker.wake.set()
        return queued

    # --- status --------------------------------------------------------------------------------------

    def status_line(self) -> None:
        counts = self.journal.counts()
        hour, _ = self.journal.done_since(time.time() - 3600)
        model = "loaded" if self.engine.loaded else "not loaded"
        journal = f", journal unwritable: {self.health.problem}" if self.health.problem else ""
        notify(f"STATUS=queue {counts['pending'] + counts['running']}, done last hour {hour}, "
               f"failed {counts['failed'] + counts['quarantined']}, model {model}{journal}")
        self.write_meta()

    def write_meta(self) -> None:
        info = self.engine.info()
        self.journal.set_meta("devices", jsontext.dumps({p: d.as_dict() for p, d in self.watches.devices.items()}))
        self.journal.set_meta(META_KEY, DaemonRecord(
            pid=os.getpid(), started=self.started, updated=time.time(),
            model=self.config.model.source, model_loaded=self.engine.loaded, device=info.device,
            model_unreachable=self.worker.outage.describe(), restart_needed=self.restart_needed,
            config=str(self.config_path),
            fingerprints={str(w.path): self.pipeline.fingerprint(w) for w in self.config.watches},
            watches=tuple(WatchRecord(str(a.watch.path), a.mode if a.available else "unavailable",
                                      a.unavailable or a.degraded or _unmounted(a) or a.reason, a.available, a.missed)
                          for a in self.watches.armed),
            missed_events_total=self.reconciler.missed_total,
        ).to_json())

    # --- reload and stop -----------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: a valid new config replaces the old one. Everything new is built first (a
        new model loaded, if the model changed), and only then is the old one let go: an
        invalid config or a model that cannot be loaded is refused, and the old config keeps
        running."""
        notify("RELOADING=1")
        try:
            config, registry = self.loader()
            self._reloadable(config)
            same = (config.model, config.runtime) == (self.config.model, self.config.runtime)
            engine = self.engine if same else self._engine(config, registry)
        except (ConfigError, PluginError, ModelLoadError) as exc:
            self.log.error("reload_refused", error=str(exc))
            notify("READY=1")
            self.write_meta()
            return
        self.restart_needed = None
        self.watches.stop()
        self.config, self.registry, self.engine = config, registry, engine
        self.pipeline = self.worker.pipeline = Pipeline(config, registry, engine)
        self._relisten(config)
        self.watches = self._arm(config)
        self.scan_all()
        self.write_meta()
        self.log.info("reloaded", watches=len(config.watches))
        notify("READY=1")

    def _reloadable(self, config: Config) -> None:
        """What a reload cannot change in a running daemon: the journal it holds the lock of (a
        new one would be written while the old one stayed locked, silently). Refused, and
        ``status`` says a restart is needed, until the config says the old value again."""
        if config.web.listen is not None:
            from .web import token

            token(config)  # a web.token_env that is not set refuses the reload, never serves without it
        new, old = os.path.realpath(config.state.db), os.path.realpath(self.config.state.db)
        if new != old:
            self.restart_needed = f"state.db changed from {old} to {new}: restart the daemon to use it"
            raise ConfigError([f"state.db: {self.restart_needed} (the rest of the new config is not applied either)"],
                              str(self.config_path))

    def shutdown(self) -> bool:
        """Stop watching, let the running job finish within the grace period, then cancel the
        model and give back what was not finished. Returns False when the worker is still stuck
        (in a decoder that cannot be interrupted): the caller must then exit without waiting."""
        notify("STOPPING=1")
        self.log.info("stopping")
        self.stop()
        self.watches.stop()
        thread = self.worker.thread
        grace = self.config.state.stop_grace_seconds
        if thread is not None:
            thread.join(timeout=grace)
            if thread.is_alive():
                self.log.warning("cancelling", reason=f"a job still ran after {grace:g} s (state.stop_grace_seconds)")
                self.engine.cancel()
                thread.join(timeout=CANCEL_GRACE_SECONDS)
        stuck = thread is not None and thread.is_alive()
        self.supervisor.wait_rescan(RESCAN_STOP_GRACE_SECONDS)
        if stuck:
            self.queue.release_all("still running at shutdown")
        for server in self.http:
            server.stop()
        self._close_web()
        self.scan_reader.close()
        self.journal.close()
        self.log.info("stopped", processed=self.worker.processed)
        return not stuck


class DaemonView:
    """What the metrics read from the daemon at scrape time (metrics.Live), on the HTTP thread."""

    def __init__(self, daemon: Daemon):
        self.d = daemon

    def queue_counts(self) -> dict[str, int]:
        return {str(state): n for state, n in self.d.journal.counts().items()}

    def model_loaded(self) -> bool:
        return self.d.engine.loaded

    def watch_modes(self) -> dict[str, str]:
        return {str(a.watch.path): a.mode if a.available else "unavailable" for a in self.d.watches.armed}

    def vision_passes(self) -> int:
        return int(getattr(self.d.engine, "vision_passes", 0))

    def missed_events(self) -> int:
        return self.d.reconciler.missed_total

    def model_reachable(self) -> bool:
        return self.d.worker.outage.since is None

    def unhealthy(self) -> str | None:
        return self.d.supervisor.trouble()


def _unmounted(armed: ArmedWatch) -> str | None:
    if not armed.missing_mounts:
        return None
    return (f"not mounted now: {', '.join(armed.missing_mounts)}; the files there are kept as they were "
            "until it returns")


def _bind(**values: Any) -> None:
    """Every log line of the worker's thread carries the file (and job) it is about."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**values)
