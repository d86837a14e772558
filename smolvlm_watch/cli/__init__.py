"""The ``smolvlm-watch`` command line: every command, apart from the daemon they start or inspect.

Exit codes: 0 success; 1 some file failed, the model could not be loaded, or what was asked for
does not exist; 2 a bad config or bad arguments, in which case nothing was processed. A closed
pipe (``smolvlm-watch status | head -1``) ends a command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError
from ..engine import ModelLoadError
from ..httpd import ListenError
from ..journal import JournalError
from ..plugins import PluginError
from .common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, config_arg, load_checked

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "build_parser", "config_arg", "load_checked", "main"]

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
    except (JournalError, ModelLoadError, ListenError) as exc:
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
