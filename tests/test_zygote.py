"""The warmed interpreter's children answer as fresh interpreters do (tests/zygote.py): the same
output, exit status, stdout/stderr split and signal deaths; an import-time key gets a fresh one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from zygote import ZYGOTE, Forked, cli_process, cli_run


def _fresh(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smolvlm_watch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_a_child_prints_and_exits_as_a_fresh_interpreter_does(tmp_path):
    for args in (["--version"], ["no-such-command"], ["status", "-c", str(tmp_path / "missing.yaml")]):
        forked, fresh = cli_run(args, tmp_path, timeout=60), _fresh(args, tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 2 and "missing.yaml" in forked.stderr


def test_a_child_dies_of_the_signal_it_is_sent_and_its_environment_is_its_own(tmp_path):
    (tmp_path / "plug.py").write_text("import os, sys\nprint('loaded', os.environ['PYTHONPATH'], file=sys.stderr)\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"plugins: [plug]\nwatches: [{{path: {tmp_path}}}]\nstate: {{db: {tmp_path}/j.sqlite}}\n")
    proc = cli_process(["config", "check", str(cfg)], tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert isinstance(proc, Forked)
    out, _ = proc.communicate(timeout=60)
    assert f"loaded {tmp_path}" in out and proc.returncode == 0, out
    stopped = ZYGOTE.popen(["--version"], dict(os.environ), tmp_path, stopped=True)  # stops before it runs
    stopped.send_signal(signal.SIGKILL)
    assert stopped.wait(30) == -signal.SIGKILL and stopped.communicate(30) == ("", None)
    assert ZYGOTE.differences({**os.environ, "HF_HOME": str(tmp_path)}) == ["HF_HOME"]  # read at import
    assert ZYGOTE.differences({**os.environ, "NOTIFY_SOCKET": "x"}) == []
