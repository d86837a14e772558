"""Docs as tests, as datasette does it: README documents every config key the parser accepts and
every command with every option it takes; a key, a command or a flag that is not in README
fails here."""

from __future__ import annotations

import argparse
import fnmatch
import re
from pathlib import Path

import pytest

from smolvlm_watch.cli import build_parser
from smolvlm_watch.config import SECTIONS
from smolvlm_watch.plugins import Registry
from smolvlm_watch.settings import keys

# The built-in backends' own keys (Backend.model), documented among model's
BACKEND_KEYS = {f"model ({name})": keys(p.obj.model) for name, p in Registry(entrypoints=False).backends.items()}

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _documented_keys() -> set[str]:
    """The keys the config reference table names: `a.b.c`, `.d` (sharing a.b's prefix), `.x_*`."""
    keys: set[str] = set()
    for line in _section("Config reference").splitlines():
        if not line.startswith("| `"):
            continue
        items = re.findall(r"`([^`]+)`", line.split(" | ")[0])
        prefix = items[0].rsplit(".", 1)[0]
        keys |= {prefix + item if item.startswith(".") else item for item in items}
    return keys


@pytest.mark.parametrize("section", sorted(SECTIONS) + sorted(BACKEND_KEYS))
def test_every_config_key_is_in_the_readme_reference(section):
    documented = _documented_keys()
    missing = []
    for key in {**SECTIONS, **BACKEND_KEYS}[section]:
        full = f"{section.split(' ')[0]}.{key}" if section else key
        if section == "":
            found = any(d == key or d.startswith((f"{key}.", f"{key}[")) for d in documented)
        else:
            found = any(fnmatch.fnmatch(full, d) for d in documented)
        if not found:
            missing.append(full)
    assert missing == [], f"README's config reference does not document {missing}"


def _commands(parser: argparse.ArgumentParser, prefix: str = "smolvlm-watch") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix} {name}"] = sub
                found.update(_commands(sub, f"{prefix} {name}"))
    return found


COMMANDS = _commands(build_parser())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_and_its_options_are_in_the_readme(command):
    sub = COMMANDS[command]
    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
        return  # a group such as `config`: its commands are checked themselves
    rows = [line for line in README.splitlines() if line.startswith("| `") and f"`{command}" in line]
    assert rows, f"README has no table row for `{command}`"
    options = [a.option_strings for a in sub._actions if a.option_strings and a.dest != "help"]
    missing = [max(o, key=len) for o in options
               if not any(f"{before}{s}" in row for s in o for row in rows for before in "[` |")]
    assert missing == [], f"README's row for `{command}` does not mention {missing}"


def test_the_tests_read_the_readme():
    """The helpers above find what they look for (a test that reads nothing passes nothing)."""
    assert {"model.dtype", "watches[].path", "state.db"} <= _documented_keys()
    assert {"smolvlm-watch process", "smolvlm-watch config check", "smolvlm-watch run"} <= set(COMMANDS)
