"""Shared fixtures: one tiny SmolVLM built with the real transformers classes per test session."""

from __future__ import annotations

import os

# Before torch is imported anywhere: the tiny model is fastest (and never stalls) on one thread,
# and installed third-party plugins must not leak into the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["SMOLVLM_WATCH_LOAD_ENTRYPOINTS"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from pathlib import Path

import pytest

from smolvlm_watch import logs

# In-process daemons log to the real stderr (fd 2, captured per test), never into a test's stdout.
logs.configure("info", "console", stream=sys.__stderr__)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from smolvlm_watch.testing import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML config into tmp_path and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from smolvlm_watch.cli import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pytest_terminal_summary(terminalreporter) -> None:
    """The reliability harness's figures (recorded with record_property, which xdist carries
    back from its workers), printed after the run."""
    lines = [value for reports in terminalreporter.stats.values() for report in reports
             for key, value in getattr(report, "user_properties", ()) if key == "harness"]
    if lines:
        terminalreporter.section("reliability harness")
        for line in sorted(set(lines)):
            terminalreporter.line(line)
