"""What every command shares: exit codes, the one way a config is read and checked, the
``-c`` argument. The subcommands import it from here, never from the package that imports them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import config as configmod
from ..config import Config, ConfigError
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
    return registry.check(config), registry


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
