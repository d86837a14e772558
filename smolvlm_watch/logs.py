"""structlog for everything: key=value on a terminal, JSON lines for journald and files.

stdlib loggers (transformers, torch, watchdog) go through the same renderer via
``ProcessorFormatter``; ``merge_contextvars`` carries the path and job id the worker binds.
transformers installs a handler of its own that writes ``[transformers] ...`` straight to
stderr and stops propagation; ``adopt_transformers`` undoes that, so not one stray line reaches
a JSON log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from . import jsontext

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", stream=None) -> None:
    """Set up structlog and stdlib logging once, before the first log call."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())
                if fmt == "console" else structlog.processors.JSONRenderer(serializer=jsontext.dumps))
    structlog.configure(
        processors=shared + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    for noisy in ("watchdog", "PIL", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    for per_request in ("httpx", "httpcore"):  # a line per request to the remote backend: noise
        logging.getLogger(per_request).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    if "transformers" in sys.modules:
        adopt_transformers()


def adopt_transformers() -> None:
    """Send transformers' log records to the root handler (ours) instead of its own stderr
    handler. Called once transformers is imported: importing it here would cost every command
    two seconds."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()


def get(name: str = "smolvlm_watch"):
    return structlog.get_logger(name)
