"""``run``: the daemon in the foreground, as systemd starts it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from .. import logs
from ..config import ConfigError
from ..daemon import Daemon
from . import EXIT_OK, config_arg, load_checked


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_checked(args.config)
    if not loaded[0].watches:
        raise ConfigError(["watches: none configured: the daemon would watch nothing (add a watches: entry; "
                           "`smolvlm-watch process PATH` runs files without one)"], str(args.config))
    logs.configure(loaded[0].logging.level, loaded[0].logging.format)
    daemon = Daemon(args.config, lambda: load_checked(args.config), loaded)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload_requested.set())
    daemon.serve()
    if not daemon.clean_exit:
        # A thread is stuck where Python cannot interrupt it (a decoder in C, a hung network
        # read): the journal is closed and the job given back, so leave without waiting for it
        # (waiting is what systemd's stop timeout would otherwise end with SIGKILL).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    r = sub.add_parser("run", help="run the daemon: watch, queue, process")
    config_arg(r)
    r.set_defaults(func=cmd_run)

