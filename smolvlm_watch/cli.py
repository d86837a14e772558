"""The ``smolvlm-watch`` command line.

Exit codes: 0 success; 1 some file failed (or the model could not be loaded); 2 a bad config or
bad arguments, in which case nothing was processed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import yaml

from . import __version__, config as configmod, logs
from .config import Config, ConfigError, WatchConfig
from .journal import JournalError
from .pipeline import FileResult, Pipeline
from .plugins import PluginError, Registry
from .progress import Progress
from .runtime import ModelLoadError, create_runtime
from .watcher import MediaFilter, scan

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _load_config(args: argparse.Namespace) -> tuple[Config, Registry]:
    """The config with command-line overrides, validated against the loaded plugins."""
    config = configmod.load(args.config) if getattr(args, "config", None) else Config()
    if getattr(args, "model", None):
        config = configmod.with_model(config, args.model)
    registry = Registry(config.plugins)
    configmod.check_names(config, set(registry.tasks), set(registry.writers))
    return config, registry


def _cli_watch(config: Config, folder: Path, tasks: list[str] | None) -> WatchConfig:
    """The watch a path outside every configured watch gets: the command line's tasks."""
    watch = WatchConfig(path=folder.resolve(), output=config.outputs)
    return replace(watch, tasks=tuple(tasks)) if tasks else watch


def _jobs(config: Config, paths: Sequence[str], tasks: list[str] | None):
    """(path, watch) pairs for every file the arguments name; missing paths come back as errors."""
    jobs, missing = [], []
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
            jobs.extend((f, watch) for f in scan(folder_watch, MediaFilter(folder_watch)))
        else:
            jobs.append((path, watch))
    return jobs, missing


def cmd_process(args: argparse.Namespace) -> int:
    logs.configure(level="debug" if args.verbose else "warning", fmt="auto")
    config, registry = _load_config(args)
    if args.task:
        configmod.check_names(replace(config, watches=(WatchConfig(path=Path("."), tasks=tuple(args.task)),)),
                              set(registry.tasks), set(registry.writers))
    jobs, results = _jobs(config, args.paths, args.task)
    pipeline = Pipeline(config, registry, create_runtime(config.model, config.runtime))
    progress = Progress(len(jobs), enabled=not args.json)
    pipeline.on_page = lambda path, done, total: progress.start(f"{Path(path).name} page {done}/{total}")
    try:
        for result in pipeline.process_many((p, w, args.force) for p, w in jobs):
            results.append(result)
            progress.advance(result.status)
            progress.start(Path(result.path).name)
    except ModelLoadError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    progress.close()
    _report(results, args.json)
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


def _report(results: list[FileResult], as_json: bool) -> None:
    done = [r.path for r in results if r.status == "done"]
    skipped = [r.path for r in results if r.status == "skipped"]
    failed = [{"path": r.path, "error": r.error} for r in results if r.status == "failed"]
    if as_json:
        print(json.dumps({"done": done, "skipped": skipped, "failed": failed}, ensure_ascii=False))
        return
    print(f"done {len(done)}, skipped {len(skipped)}, failed {len(failed)}")
    for f in failed:
        print(f"  failed {f['path']}: {f['error']}")


def cmd_config_check(args: argparse.Namespace) -> int:
    config, _ = _load_config(args)
    print(f"# {args.config}: valid")
    print(yaml.safe_dump(configmod.resolved(config), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    config, registry = _load_config(args)
    rows = [{"kind": kind, "name": p.name, "plugin": p.plugin, "version": p.version,
             "description": getattr(p.obj, "description", "")}
            for kind, table in (("task", registry.tasks), ("writer", registry.writers))
            for p in sorted(table.values(), key=lambda p: p.name)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['kind']:<7} {r['name']:<10} {r['plugin']} {r['version']}  {r['description']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smolvlm-watch", description=(
        "Caption, tag and OCR images, videos and scanned documents with one shared SmolVLM2 model; "
        "results land as sidecar files."))
    parser.add_argument("--version", action="version", version=f"smolvlm-watch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    from . import service  # the daemon's commands live beside the daemon

    service.add_commands(sub)



    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
