"""``run``: the daemon in the foreground, as systemd starts it; ``serve``: its web page alone."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from .. import logs
from ..config import WEB_PORT, Address, ConfigError
from ..daemon import Daemon
from .common import EXIT_OK, config_arg, load_checked


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


def cmd_serve(args: argparse.Namespace) -> int:
    """The web page over the daemon's journal and sidecars, without the daemon (a second
    process may read the journal while the daemon writes it)."""
    from ..httpd import ListenError, bound, routed
    from ..web import Web, open_journal, token

    config, _ = load_checked(args.config)
    logs.configure(config.logging.level, config.logging.format)
    address = config.web.listen or Address("127.0.0.1", WEB_PORT)
    journal = open_journal(config)
    try:
        server = bound(address, routed({}, Web(config, journal, token(config)).handle), "web.listen", str(args.config))
    except ListenError:
        journal.close()
        raise
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    logs.get("smolvlm_watch.serve").info("http_listening", address=str(server.address), url=f"http://{server.address}/")
    stop.wait()
    server.stop()
    journal.close()
    return EXIT_OK


def add_commands(sub: Any) -> None:
    r = sub.add_parser("run", help="run the daemon: watch, queue, process")
    config_arg(r)
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("serve", help="serve the web page (status, search, results) without the daemon")
    config_arg(s)
    s.set_defaults(func=cmd_serve)

