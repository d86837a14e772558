"""The operator's commands over the daemon's journal: ``status``, ``explain``, ``backfill``,
``retry``, and ``doctor`` for a setup before it runs for months."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import doctor, jsontext, report
from ..config import Config, ConfigError, WatchConfig
from ..daemon_record import META_KEY, DaemonRecord
from ..journal import BACKFILL, Job, Journal, JournalError
from ..jsontext import printable
from ..media import Limits, MediaError, is_undecodable, open_media
from ..pipeline import Pipeline
from ..plugins import PluginError
from ..progress import Progress
from ..reconcile import Reconciler
from ..atomic import atomic_write
from ..sidecar import SidecarError, Target, Writer, orphaned, read_json, read_regular
from ..watcher import MediaFilter, scan
from .common import EXIT_FAILED, EXIT_OK, config_arg, load_checked


def _daemon(journal: Journal) -> tuple[DaemonRecord, bool]:
    """What the daemon last wrote about itself, and whether it runs now."""
    return DaemonRecord.from_json(journal.meta(META_KEY)), journal.daemon_running()


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


# --- status ------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    config, _ = load_checked(args.config)
    journal = Journal(config.state.db, readonly=True)
    try:
        status = _status(config, journal)
    finally:
        journal.close()
    if args.json:
        print(jsontext.dumps(status, indent=2))
    else:
        _print_status(status)
    return EXIT_OK


def _status(config: Config, journal: Journal) -> dict[str, Any]:
    r = report.read(config, journal)
    running = r.running
    watches = ([asdict(w) for w in r.daemon.watches]
               or [{"path": str(w.path), "mode": "not running"} for w in config.watches])
    for w in watches:
        w["scan"] = json.loads(journal.meta(f"scan:{w['path']}") or "{}")
    return {
        "db": str(config.state.db), "daemon_running": running, "pid": r.daemon.pid,
        "queue": r.queue, "done_last_hour": r.done_last_hour, "orphans": r.orphans,
        "index": dict(zip(("passages", "bytes"), r.index)), "throughput_per_min": r.throughput_per_min,
        "model": r.model, "model_loaded": r.daemon.model_loaded and running,
        "model_unreachable": r.daemon.model_unreachable if running else None,
        "restart_needed": r.daemon.restart_needed if running else None,
        "watches": watches,
        "failures": [{"path": j.path, "state": j.state, "attempts": j.attempts, "error": j.last_error}
                     for j in r.failures],
        "skipped_formats": _skipped_formats(list(r.failures)),
    }


def _skipped_formats(failures: list[Job]) -> list[dict[str, Any]]:
    """Files of a format nothing here decodes, counted per extension with the fix (the first
    such file's error says it): a library of HEICs without their decoder is one line."""
    groups: dict[str, dict[str, Any]] = {}
    for job in failures:
        if is_undecodable(job.last_error):
            ext = Path(job.path).suffix.lower() or "(no extension)"
            group = groups.setdefault(ext, {"extension": ext, "files": 0, "error": job.last_error})
            group["files"] += 1
    return sorted(groups.values(), key=lambda g: -g["files"])


def _print_status(status: dict[str, Any]) -> None:
    running = status["daemon_running"]
    print(f"daemon: {'running, pid ' + str(status['pid']) if running else 'not running'}")
    print(printable(f"model: {status['model']} ({'loaded' if status['model_loaded'] else 'not loaded'}"
                    + (f"; {status['model_unreachable']}" if status["model_unreachable"] else "") + ")"))
    if status["restart_needed"]:
        print(printable(f"restart needed: {status['restart_needed']}"))
    print("queue: " + ", ".join(f"{k} {v}" for k, v in status["queue"].items()))
    rate = status["throughput_per_min"]
    print(f"done in the last hour: {status['done_last_hour']}" + (f" ({rate}/min of busy time)" if rate else ""))
    for w in status["watches"]:
        print(printable(f"watch {w['path']}: {w.get('mode')}" + (f" ({w['reason']})" if w.get("reason") else "")))
        skipped = (w.get("scan") or {}).get("skipped") or {}
        if skipped:
            print("  skipped at the last scan: " + ", ".join(f"{n} {what}" for what, n in skipped.items()))
    index = status["index"]
    size = f", {index['bytes'] / 2**20:.1f} MiB" if index["bytes"] is not None else ""
    print(f"search index: {index['passages']} passages{size}")
    if status["orphans"]:
        print(f"orphans: the sidecars of {status['orphans']} file(s) gone for longer than state.gone_grace "
              "(`smolvlm-watch prune` removes them)")
    for g in status["skipped_formats"]:
        print(printable(f"skipped formats: {g['files']} {g['extension']} — {g['error']} "
                        "(`status --json` lists the files)"))
    for f in status["failures"]:
        if is_undecodable(f["error"]):
            continue  # counted above
        print(printable(f"{f['state']} {f['path']} (attempts {f['attempts']}): {f['error']}"))


# --- explain -----------------------------------------------------------------------------------

def cmd_explain(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    path = Path(args.file).expanduser().absolute()
    watch = config.watch_for(path)
    lines = [f"file: {path}"]
    if watch is None:
        lines.append("watch: none — the file lies outside every configured watch; it would not be processed")
        print(printable("\n".join(lines)))
        return EXIT_FAILED
    why_not = MediaFilter(watch).reason_on_disk(path)
    pipeline = Pipeline(config, registry, registry.engine(config))
    target = Target.for_media(path, watch.output, watch.path)
    lines += [
        f"watch: {watch.path} (recursive {watch.recursive}, include {list(watch.include) or 'all'}, "
        f"exclude {list(watch.exclude) or 'none'})",
        f"filter: {'accepted' if why_not is None else 'not input: ' + why_not}",
        f"decoder: {_decoder(path, pipeline.limits)}",
        "tasks: " + ", ".join(f"{p.task.name} (fingerprint {p.fingerprint})" for p in pipeline.planned(watch)),
        f"outputs: {', '.join(watch.outputs)}; JSON sidecar {target.json_path}; policy {watch.output.policy}",
    ]
    job = _job(config, path)
    if job is None:
        lines.append("journal: no entry")
    else:
        lines.append(f"journal: {job.state}, attempts {job.attempts}"
                     + (f", last error: {job.last_error}" if job.last_error else ""))
    lines += _results(target)
    exists = os.path.lexists(path)
    lines.append("verdict: " + (_verdict(path, why_not, job, pipeline.fingerprint(watch), watch) if exists
                                else "the file does not exist"))
    print(printable("\n".join(lines)))
    return EXIT_OK if exists else EXIT_FAILED


def _results(target: Target) -> list[str]:
    """Each task's entry in the file's sidecar, one line each: done, failed, or skipped and why."""
    try:
        doc = read_json(target.json_path)
    except SidecarError as exc:
        return [f"results: {exc}"]
    lines = []
    for name, entry in ((doc or {}).get("tasks") or {}).items():
        if "error" in entry:
            lines.append(f"{name}: failed — {entry['error']}")
        elif "skipped" in entry:
            gate = entry.get("gate")
            lines.append(f"{name}: skipped — {entry['skipped']}"
                         + (f" (gate answered {gate.get('answer')!r})" if isinstance(gate, dict) else ""))
        else:
            lines.append(f"{name}: done" + (f" (gate answered {entry['gate'].get('answer')!r})"
                                            if isinstance(entry.get("gate"), dict) else ""))
    return lines


def _decoder(path: Path, limits: Limits) -> str:
    """What would decode the file, decided by its content as the daemon decides it; an image is
    decoded too (one file, on request), so a decoder that opens the file but cannot read it
    (a camera newer than LibRaw) says so here."""
    try:
        with open_media(path, limits) as opened:
            name = f"{opened.decoder} ({opened.kind}, {opened.format})"
            if opened.kind == "image":
                opened.image(limits)
            return name
    except MediaError as exc:
        return f"none — {exc.reason}"


def _job(config: Config, path: Path) -> Job | None:
    try:
        journal = Journal(config.state.db, readonly=True)
    except JournalError:
        return None
    try:
        return journal.get(str(path))
    finally:
        journal.close()


def _verdict(path: Path, why_not: str | None, job: Job | None, fingerprint: str, watch: WatchConfig) -> str:
    if why_not is not None:
        return f"would not be processed ({why_not})"
    if job is None:
        return "would be processed (not in the journal yet)"
    if job.state == "done":
        st = path.stat()
        if (job.size, job.mtime) != (st.st_size, st.st_mtime):
            return "would be processed again (the file changed since)"
        missing = Reconciler.missing(job, watch)
        if missing is not None:
            return f"would be processed again (its sidecar {missing} is missing)"
        if job.fingerprint != fingerprint:
            return "results are stale (tasks, prompts or model changed): `smolvlm-watch backfill --stale` queues it"
        return "up to date; nothing to do"
    if job.state in ("failed", "quarantined"):
        return f"{job.state}; `smolvlm-watch retry {path}` queues it again once the cause is fixed"
    return f"{job.state}: the daemon will process it"


# --- backfill and retry ------------------------------------------------------------------------

def cmd_backfill(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    pipeline = Pipeline(config, registry, registry.engine(config))
    journal = Journal(config.state.db)
    under = _absolute(args.path) if args.path else None
    try:
        mode = "all" if args.all else "stale" if args.stale else "missing"
        if mode == "stale":
            queued = sum(journal.requeue_stale(str(w.path), pipeline.fingerprint(w), under) for w in config.watches)
        else:
            queued = _backfill_scan(config, journal, under, force=mode == "all")
        daemon, running = _daemon(journal)
    finally:
        journal.close()
    print(f"backfill --{mode}: queued {queued} file(s); " + _who_runs_them(daemon, running, config, pipeline))
    return EXIT_OK


def _backfill_scan(config: Config, journal: Journal, under: str | None, force: bool) -> int:
    """Every file below ``under`` (whole path components), queued when it is new, changed, has
    a sidecar missing, or ``force``."""
    files = [(w, p) for w in config.watches for p in scan(w)
             if under is None or p == Path(under) or p.is_relative_to(under)]
    progress = Progress(len(files), unit="files scanned")
    queued = 0
    for watch, path in files:
        st = path.stat()
        if journal.enqueue(str(path), str(watch.path), st.st_size, st.st_mtime, BACKFILL, force=force):
            queued += 1
        else:
            job = journal.get(str(path))
            missing = Reconciler.missing(job, watch) if job is not None and job.state == "done" else None
            queued += missing is not None and journal.requeue(str(path), f"its sidecar {missing} is missing")
        progress.advance()
    progress.close()
    return queued


def _who_runs_them(daemon: DaemonRecord, running: bool, config: Config, pipeline: Pipeline) -> str:
    """Whether the queued files will actually be run, and what to do if not."""
    if not running:
        return "no daemon is running: start it (systemctl start smolvlm-watch), or use `smolvlm-watch process`"
    theirs = daemon.fingerprints
    if any(theirs.get(str(w.path)) != pipeline.fingerprint(w) for w in config.watches):
        return ("the daemon runs an older config and would skip them: reload it "
                "(systemctl reload smolvlm-watch) so it uses this one")
    return "the running daemon processes them after live files (`smolvlm-watch status` shows progress)"


def cmd_retry(args: argparse.Namespace) -> int:
    config, _ = load_checked(args.config)
    if not args.all and not args.path:
        print("error: name a PATH or give --all", file=sys.stderr)
        return 2
    under = None if args.all else _absolute(args.path)
    journal = Journal(config.state.db)
    try:
        if under is not None and not journal.knows(under):
            print(printable(f"error: the journal knows no file at or under {under}"), file=sys.stderr)
            return EXIT_FAILED
        n = journal.requeue_failed(under)
    finally:
        journal.close()
    print(f"re-queued {n} failed file(s)")
    return EXIT_OK


def cmd_rescan(args: argparse.Namespace) -> int:
    """Ask the running daemon for a rescan now: of every watch, or of the folder SUBPATH."""
    config, _ = load_checked(args.config)
    under = _absolute(args.path) if args.path else None
    if under is not None and config.watch_for(Path(under)) is None:
        print(printable(f"error: {under} lies in no configured watch"), file=sys.stderr)
        return EXIT_FAILED
    journal = Journal(config.state.db)
    try:
        running = journal.daemon_running()
        journal.ask_rescan(under)
    finally:
        journal.close()
    what = under or "every watch"
    print(printable(f"rescan of {what} asked for" + ("; the daemon takes it within seconds" if running
                                                      else "; no daemon runs now: it is done at its start")))
    return EXIT_OK


# --- prune -----------------------------------------------------------------------------------------

def cmd_prune(args: argparse.Namespace) -> int:
    """Remove the sidecars of files gone for longer than state.gone_grace: only what we wrote,
    still holding the bytes we wrote (by their recorded hashes), used by no other file; from a
    file we merged into (XMP) only our part."""
    config, registry = load_checked(args.config)
    journal = Journal(config.state.db, readonly=args.dry_run)
    merging = {suffix: w.obj for w in registry.writers.values() for suffix in w.obj.merges}
    try:
        pruning = Pruning(config, journal, merging, args.dry_run)
        files = pruning.run(_absolute(args.path) if args.path else None)
    finally:
        journal.close()
    t = pruning.tally
    verb = "would remove" if args.dry_run else "removed"
    extra = [f"{t['cleaned']} shared file(s) {'would lose' if args.dry_run else 'lost'} only our fields"
             * bool(t["cleaned"]),
             f"{t['shared']} still used by another file" * bool(t["shared"]),
             f"{t['back']} file(s) back on disk, queued again" * bool(t["back"])]
    print(f"prune: {verb} {t['removed']} sidecar file(s) of {files} file(s) gone for more than "
          f"{config.state.gone_grace / 86400:g} day(s); kept {t['kept']} changed since we wrote them"
          + "".join(f"; {e}" for e in extra if e))
    return EXIT_OK


class Pruning:
    """One ``prune`` run: each gone file's sidecars looked at again at prune time."""

    def __init__(self, config: Config, journal: Journal, merging: dict[str, Writer], dry_run: bool):
        self.config, self.journal, self.merging, self.dry_run = config, journal, merging, dry_run
        self.tally = dict.fromkeys(("removed", "kept", "cleaned", "shared", "back"), 0)

    def run(self, under: str | None) -> int:
        gone = self.journal.gone_before(time.time() - self.config.state.gone_grace, under)
        for job in gone:
            self._file(job)
        return len(gone)

    def _say(self, line: str) -> None:
        print(printable("  " + line))

    def _file(self, job: Job) -> None:
        if os.path.lexists(job.path):  # back since the rescan marked it gone: its sidecars are its own again
            self.tally["back"] += 1
            self._say(f"kept the sidecars of {job.path}: the file is back (queued again)")
            if not self.dry_run:
                self.journal.requeue(job.path, "it is back after being gone")
            return
        watch = self.config.watch_for(Path(job.path))
        if watch is None:
            self._say(f"skipped {job.path}: it lies in no configured watch, so where its sidecars went is unknown")
            return
        others = self._others(job)
        for path, ours in orphaned(Target.for_media(Path(job.path), watch.output, watch.path), job.outputs,
                                   job.path).items():
            user = next((other for other, uses in others if uses(path)), None)
            if user is not None:
                self.tally["shared"] += 1
                self._say(f"kept {path}: still used by {user}")
            elif not ours:
                self.tally["kept"] += 1
                self._say(f"kept {path}: changed since smolvlm-watch wrote it")
            else:
                self._release(path)
        if not self.dry_run:
            self.journal.forget(job.path)

    def _others(self, job: Job) -> list[tuple[str, Any]]:
        """The files still on disk that may share a sidecar with ``job`` (same folder and stem),
        each with a test of whether it uses a given sidecar path: by its recorded set, or, while
        it has none yet, any file beside its own sidecars."""
        found = []
        for other in self.journal.same_stem(job.path):
            watch = self.config.watch_for(Path(other.path))
            if watch is None or not os.path.lexists(other.path):
                continue
            folder = Target.for_media(Path(other.path), watch.output, watch.path).folder
            names = set(other.outputs) if other.outputs is not None else None
            found.append((other.path, lambda p, f=folder, n=names: p.parent == f and (n is None or p.name in n)))
        return found

    def _release(self, path: Path) -> None:
        """Remove a file that is ours alone; take our part out of one we merged into."""
        writer = self.merging.get(path.suffix.lower())
        rest = writer.unmerge(read_regular(path)) if writer is not None else None
        if rest is None:
            self.tally["removed"] += 1
            self._say(f"{'would remove' if self.dry_run else 'removed'} {path}")
            if not self.dry_run:
                path.unlink(missing_ok=True)
            return
        self.tally["cleaned"] += 1
        self._say(f"{'would remove' if self.dry_run else 'removed'} our fields from {path}: it holds others' too")
        if not self.dry_run:
            atomic_write(path, rest)


# --- doctor --------------------------------------------------------------------------------------

def cmd_doctor(args: argparse.Namespace) -> int:
    if args.as_service:
        return _doctor_as_service(args)
    try:
        config, registry = load_checked(args.config)
    except (ConfigError, PluginError) as exc:
        checks = [doctor.Check("FAIL", f"config: {exc}", "correct the config file")]
    else:
        checks = [doctor.Check("ok", f"config {args.config} is valid ({len(config.watches)} watches)"),
                  *doctor.run_checks(config, registry.backend(config).doctor(config))]
    for c in checks:
        print(c.line())
    failed = sum(c.level == "FAIL" for c in checks)
    print(f"{failed} problem(s)" if failed else "all checks passed")
    return EXIT_FAILED if failed else EXIT_OK


def _doctor_as_service(args: argparse.Namespace) -> int:
    """The same checks inside the unit's sandbox (its user, ReadWritePaths=, ProtectSystem=...):
    a doctor run as root outside it proves nothing about what the service may write."""
    import shutil
    import subprocess

    why = doctor.systemd_is_pid1()
    if why is None and not shutil.which("systemctl"):
        why = "systemctl is not installed"
    unit = args.unit
    text = ""
    if why is None:
        shown = subprocess.run(["systemctl", "cat", unit], capture_output=True, text=True)
        text, why = shown.stdout, (None if shown.returncode == 0 else f"`systemctl cat {unit}` failed: "
                                   f"{shown.stderr.strip() or shown.returncode}")
    if why is not None:
        print(doctor.Check("FAIL", f"cannot run the checks as the service: {why}",
                           "run `smolvlm-watch doctor` (outside the sandbox) here, and `doctor --as-service` on "
                           "the host that runs the unit").line())
        return EXIT_FAILED
    exe = shutil.which("smolvlm-watch") or sys.argv[0]
    argv = [exe, "doctor", "-c", str(Path(args.config).absolute())]
    print(f"running the checks as {unit} would: its user and sandbox (systemd-run)", flush=True)
    return subprocess.run(doctor.as_service_command(unit, text, argv)).returncode


def add_commands(sub: Any) -> None:
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
    r = sub.add_parser("rescan", help="ask the running daemon to rescan now (every watch, or one folder)")
    config_arg(r)
    r.add_argument("path", nargs="?", help="a folder inside a watch (default: every watch)")
    r.set_defaults(func=cmd_rescan)
    p = sub.add_parser("prune", help="remove the sidecars of files gone for longer than state.gone_grace")
    config_arg(p)
    p.add_argument("path", nargs="?", help="only files at or below this path")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=cmd_prune)
    d = sub.add_parser("doctor", help="check config, model, permissions, inotify limits, disk, device and engine")
    config_arg(d)
    d.add_argument("--as-service", action="store_true",
                   help="run the checks inside the systemd unit's sandbox (its user, ReadWritePaths=, ...)")
    d.add_argument("--unit", default="smolvlm-watch", help="the unit whose sandbox --as-service uses")
    d.set_defaults(func=cmd_doctor)
