"""Shared fixtures: one tiny SmolVLM built with the real transformers classes per test session."""

from __future__ import annotations

import os

# Before torch is imported anywhere: the tiny model is fastest (and never stalls) on one thread,
# and installed third-party plugins must not leak into the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["SMOLVLM_WATCH_LOAD_ENTRYPOINTS"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from smolvlm_watch import logs  # noqa: E402

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


def make_image(path: Path, size=(96, 64), color=(200, 40, 40), fmt: str | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt or None, **save)
    return path


def read_sidecar(media: Path) -> dict:
    return json.loads(media.with_name(media.name + ".smolvlm.json").read_text(encoding="utf-8"))


def write_trap_plugin(folder: Path, module: str, task: str, trigger: str, action: str) -> None:
    """A plugin module whose task misbehaves (runs ``action``) on files named ``trigger`` only."""
    (folder / f"{module}.py").write_text(f"""
import time
from smolvlm_watch import hookimpl
from smolvlm_watch.tasks import Task

class Trap(Task):
    name = {task!r}
    default_prompt = "x"
    default_max_new_tokens = 1

    def requests(self, media, spec):
        if media.info.path.endswith({trigger!r}):
            {action}
        return super().requests(media, spec)

@hookimpl
def register_tasks(register):
    register(Trap())
""")


_PEAK = """
import json, resource, sys
from smolvlm_watch.cli import main
code = main(["process", sys.argv[1], "-c", sys.argv[2], "--json"])
print(json.dumps({"code": code, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def process_peak_mb(path: Path, config: Path) -> float:
    """`process PATH -c CONFIG` in a fresh interpreter; its peak RSS in MB (it must succeed)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(config)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0, result
    return result["peak_mb"]
