"""``process`` (files and folders now, then exit), ``config check`` and ``plugins``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import structlog
import yaml

from .. import config as configmod, jsontext, logs
from ..config import Config, ConfigError, WatchConfig
from ..jsontext import printable
from ..engine import Outage, Unreachable
from ..pipeline import FileJob, FileResult, Pipeline
from ..plugins import Provided
from ..progress import Progress
from ..watcher import MediaFilter, ScanReport, scan
from .common import EXIT_FAILED, EXIT_OK, load_checked

log = structlog.get_logger("smolvlm_watch.process")


def _cli_watch(config: Config, folder: Path, tasks: list[str] | None) -> WatchConfig:
    """The watch a path outside every configured watch gets: the command line's tasks."""
    watch = WatchConfig(path=folder.resolve(), output=config.outputs)
    return replace(watch, tasks=tuple(tasks)) if tasks else watch


def _jobs(config: Config, paths: Sequence[str], tasks: list[str] | None, force: bool, report: ScanReport
          ) -> tuple[list[FileJob], list[FileResult]]:
    """A job for every file the arguments name; missing paths come back as failures. What a
    folder's scan passes over is counted in ``report``."""
    jobs: list[FileJob] = []
    missing: list[FileResult] = []
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if not path.exists():
            missing.append(FileResult(str(path), "failed", "no such file or directory"))
            continue
        watch = config.watch_for(path / "x" if path.is_dir() else path)
        if watch is None:
            watch = _cli_watch(config, path if path.is_dir() else path.parent, tasks)
        elif tasks:
            watch = replace(watch, tasks=tuple(tasks))
        if path.is_dir():
            folder_watch = replace(watch, path=path) if watch.path != path else watch
            jobs.extend(FileJob(f, watch, force) for f in scan(folder_watch, MediaFilter(folder_watch), report))
        else:
            jobs.append(FileJob(path, watch, force))
    return jobs, missing


def cmd_process(args: argparse.Namespace) -> int:
    level = "debug" if args.verbose else "warning"
    logs.configure(level=level, fmt="auto")
    config, registry = load_checked(args.config, args.model)
    logs.configure(level=level, fmt=config.logging.format)  # the config's format, as the daemon's
    if args.task:
        registry.check(replace(config, watches=(WatchConfig(path=Path("."), tasks=tuple(args.task)),)))
    report = ScanReport()
    jobs, results = _jobs(config, args.paths, args.task, args.force, report)
    pipeline = Pipeline(config, registry, registry.engine(config))
    progress = Progress(len(jobs), enabled=not args.json and not args.verbose)  # -v lines get the terminal
    pipeline.on_page = lambda path, done, total: progress.start(f"{Path(path).name} page {done}/{total}")
    try:
        _run(pipeline, jobs, results, progress)
    finally:
        progress.close()
    _report(results, args.json, _not_taken(report))
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


def _run(pipeline: Pipeline, jobs: list[FileJob], results: list[FileResult], progress: Progress) -> None:
    """Every job through the pipeline. While the model server is out of reach the run waits
    and probes (as the daemon does), then goes on with the files it had not finished."""
    outage = Outage(structlog.get_logger("smolvlm_watch.process"))
    while jobs:
        try:
            for _, result in pipeline.process_many(jobs):
                results.append(result)
                _log(result)
                progress.advance(result.status)
                progress.start(Path(result.path).name)
            return
        except Unreachable as exc:
            finished = {r.path for r in results}
            jobs = [j for j in jobs if str(j.path) not in finished]
            outage.down(str(exc), exc.retry_after)
            print(printable(f"{outage.describe()}; waiting for it ({len(jobs)} file(s) to go, Ctrl-C stops)"),
                  file=sys.stderr)
            while not outage.reachable(pipeline.engine):
                time.sleep(max(0.05, outage.next_probe - time.monotonic()))


def _log(result: FileResult) -> None:
    """One event per file (``-v`` shows them): file_done, file_skipped or file_failed."""
    fields = {"path": result.path, "seconds": round(result.seconds, 3), "tasks": list(result.tasks_run)}
    if result.error:
        fields["error"] = result.error
    log.info(f"file_{result.status}", **fields)


def _not_taken(report: ScanReport) -> dict[str, int]:
    """Files under a media name that a folder's scan did not take (symlinks out of the folder,
    FIFOs and the like): a person would expect them processed, so they are never passed over
    in silence. Other extensions are the watch's documented rule, and sidecars sit among them."""
    return {why: n for why, n in report.skipped.items() if not why.endswith("(not a media extension)")}


def _report(results: list[FileResult], as_json: bool, not_taken: dict[str, int]) -> None:
    done = [r.path for r in results if r.status == "done"]
    skipped = [r.path for r in results if r.status == "skipped"]
    failed = [{"path": r.path, "error": r.error} for r in results if r.status == "failed"]
    if as_json:  # stdout holds the one object; what was not taken goes to the log (stderr)
        if not_taken:
            log.warning("files_not_taken", **not_taken)
        print(jsontext.dumps({"done": done, "skipped": skipped, "failed": failed}))
        return
    print(f"done {len(done)}, skipped {len(skipped)}, failed {len(failed)}")
    if not_taken:
        counts = ", ".join(f"{n} {why}" for why, n in not_taken.items())
        print(f"  not taken: {counts}; `smolvlm-watch explain FILE` says why for a file")
    for f in failed:
        print(printable(f"  failed {f['path']}: {f['error']}"))


def cmd_config_check(args: argparse.Namespace) -> int:
    config, registry = load_checked(args.config)
    if config.model.path is not None and not config.model.path.is_dir():
        raise ConfigError([f"model.path: {config.model.path} is not a folder (build or copy the model there, or "
                           "set model.id to a hub id)"], str(args.config))
    print(f"# {args.config}: valid")
    print(yaml.safe_dump(configmod.resolved(config), sort_keys=False, allow_unicode=True), end="")
    for line in _ignored_remotely(config, registry) + _missing_folders(config):
        print(line)
    return EXIT_OK


def _missing_folders(config: Config) -> list[str]:
    """Watch folders that are not there now (comments after the YAML): a share not mounted yet
    is fine to start with, and the daemon shows the watch unavailable until it appears."""
    return [f"# warning: watches[{i}].path: {w.path} does not exist now (a share not mounted yet?); the daemon "
            "starts and shows this watch unavailable in status, /healthz and /metrics until it appears"
            for i, w in enumerate(config.watches) if not w.path.exists()]


def _ignored_remotely(config: Config, registry: Any) -> list[str]:
    """Per-task image settings a server without per-request processor options will not apply
    (comments after the YAML, so the output stays a valid config)."""
    found, who = {}, None
    for watch in config.watches:
        for name in watch.tasks:
            provided = registry.tasks.get(name)
            if provided is None:
                continue
            image = provided.obj.spec(config.task_config(name, watch)).image.over(config.model.image)
            if (why := config.model.unapplied(image)) is not None:
                found[name], who = image, why
    if not found:
        return []
    lines = [f"# note: {who} applies its own tiling, not these tasks' image settings (the sidecar records "
             "what was applied):"]
    for name, image in found.items():
        lines.append(f"#   {name}: image_splitting {image.splitting}, max_image_size {image.max_image_size}")
    return lines


def cmd_plugins(args: argparse.Namespace) -> int:
    _, registry = load_checked(args.config)
    tables: tuple[tuple[str, dict[str, Provided[Any]]], ...] = (("task", registry.tasks), ("writer", registry.writers))
    rows: list[dict[str, Any]] = [
        {"kind": kind, "name": p.name, "plugin": p.plugin, "version": p.version,
         "description": getattr(p.obj, "description", "")}
        for kind, table in tables for p in sorted(table.values(), key=lambda p: p.name)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['kind']:<7} {r['name']:<10} {r['plugin']} {r['version']}  {r['description']}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    p = sub.add_parser("process", help="process files and folders now, then exit")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-c", "--config", help="config file (each file gets the tasks and outputs of its watch)")
    p.add_argument("--model", help="hub id or local folder (overrides the config)")
    p.add_argument("--task", action="append", help="task to run (repeatable; overrides the watch's tasks)")
    p.add_argument("--force", action="store_true", help="run even when the sidecar is current")
    p.add_argument("--json", action="store_true", help="print one JSON object {done, skipped, failed}")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step")
    p.set_defaults(func=cmd_process)

    c = sub.add_parser("config", help="config helpers")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a config and print it resolved")
    cc.add_argument("config", metavar="FILE")
    cc.set_defaults(func=cmd_config_check)

    pl = sub.add_parser("plugins", help="list tasks and writers with their plugin and version")
    pl.add_argument("-c", "--config", help="config file (its plugins: list is loaded too)")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)
