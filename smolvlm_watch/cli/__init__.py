"""The ``smolvlm-watch`` command line: every command, apart from the daemon they start or inspect.

Exit codes: 0 success; 1 some file failed, the model could not be loaded, or what was asked for
does not exist; 2 a bad config or bad arguments, in which case nothing was processed. A closed
pipe (``smolvlm-watch status | head -1``) ends a command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from collections.abc import Sequence

from .. import __version__, config as configmod
from ..config import Config, ConfigError
from ..engine import ModelLoadError
from ..journal import JournalError
from ..plugins import PluginError, Registry

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def load_checked(path: str | Path | None, model: str | None = None) -> tuple[Config, Registry]:
    """The config (built-in defaults without a file), ``--model`` applied, validated against the
    plugins it loads: task and writer names, and each task's options. The one way every
    command and the daemon's reload read a config."""
    try:
        config = configmod.load(path) if path else Config()
    except ConfigError as exc:  # and the unknown names, in the same pass
        raise ConfigError(exc.problems + _unknown_names(path), exc.source) from None
    if model:
        config = configmod.with_model(config, model)
    registry = Registry(config.plugins)
    registry.check(config)
    return config, registry


def _unknown_names(path: str | Path | None) -> list[str]:
    """The plugin names a config that does not parse uses and no plugin provides."""
    found = configmod.raw_names(path) if path else configmod.Names()
    try:
        return Registry(found.plugins).unknown(found)
    except PluginError:
        return []  # its plugins cannot load: the parse's problems say enough for now


def config_arg(p: argparse.ArgumentParser, required_help: str | None = None) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("SMOLVLM_WATCH_CONFIG", "config.yaml"),
                   help=required_help or "config file (default: $SMOLVLM_WATCH_CONFIG or ./config.yaml)")


def build_parser() -> argparse.ArgumentParser:
    from . import find, ops, process, run

    parser = argparse.ArgumentParser(prog="smolvlm-watch", description=(
        "Caption, tag and OCR images, videos and scanned documents with one shared SmolVLM2 model; "
        "results land as sidecar files."))
    parser.add_argument("--version", action="version", version=f"smolvlm-watch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    process.add_commands(sub)
    run.add_commands(sub)
    ops.add_commands(sub)
    find.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PluginError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (JournalError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_pipe() -> None:
    """The reader went away (``| head``): nothing more can be said, and Python must not
    complain at exit while flushing stdout to the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
