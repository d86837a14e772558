"""Real `smolvlm-watch` processes without paying for their imports each time.

A fresh interpreter spends 5-8 s of CPU importing torch, torchvision (which imports torch._dynamo)
and transformers before the daemon reads its config: most of what a test that kills, crashes or
signals a real daemon costs on 2 cores. The zygote is one interpreter per test worker that
imports all of that once, runs nothing, and forks: each child is a real process with its own pid,
journal, signals, exit status and stdout/stderr pipe, running the command line exactly as
``python -m smolvlm_watch.cli`` does from its imports on, and leaving the interpreter through the
normal exit (atexit, non-daemon threads joined) or dying the way the test makes it die.

What a child cannot show is the interpreter's own start: a warning printed while torch is
imported, an environment variable read at import time. Tests about those (JSON-only logs,
sd_notify, the example config) start a fresh interpreter (``spawn(..., fresh=True)``), and a
command whose environment differs from the zygote's in anything but the keys read at run time
(``RUNTIME_KEYS``) gets a fresh interpreter too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Environment variables smolvlm-watch reads when it runs, never at import: a child may differ from
# the zygote in these (PYTHONPATH is put on sys.path the way the interpreter would).
# PYTEST_CURRENT_TEST changes with every test and is nobody's business.
RUNTIME_KEYS = frozenset({"PYTHONPATH", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SMOLVLM_WATCH_CONFIG",
                          "STATE_DIRECTORY", "XDG_STATE_HOME", "PYTEST_CURRENT_TEST"})

_SERVER = r"""
import json, os, runpy, signal, socket, sys
ctl = socket.socket(fileno=int(sys.argv[1]))
import smolvlm_watch.cli, smolvlm_watch.daemon, smolvlm_watch.runtime, smolvlm_watch.testing  # noqa: F401
import torch, torchvision, transformers  # noqa: F401
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: F401
import transformers.models.smolvlm.modeling_smolvlm, transformers.models.smolvlm.processing_smolvlm  # noqa: F401
import transformers.models.smolvlm.video_processing_smolvlm  # noqa: F401
ctl.sendall(b'{"ready": true}\n')
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
children = {}

def reap():
    while children:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            return
        children.pop(pid, None)
        ctl.sendall(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status),
                                "peak_kb": usage.ru_maxrss}).encode() + b"\n")

def child(request, fds):
    ctl.close()
    os.dup2(fds[0], 1)
    os.dup2(fds[-1], 2)
    for fd in set(fds):
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = extra
    script = request["script"]
    if script:  # `python SCRIPT ARGS`: its folder first on sys.path
        sys.argv = [script, *request["args"]]
        sys.path[0] = os.path.dirname(script)
    else:
        sys.argv = ["smolvlm_watch.cli", *request["args"]]
    if request["stopped"]:  # until a tracer has attached and continues it
        import ctypes  # PR_SET_PTRACER_ANY: a tracer that is not our parent may attach (Yama)
        ctypes.CDLL(None).prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)
        os.kill(os.getpid(), signal.SIGSTOP)
    try:
        if script:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module("smolvlm_watch.cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:  # as the interpreter reads it: None 0, an int itself, else printed and 1
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    exit_as_python_does(code)

def exit_as_python_does(code):
    # Py_FinalizeEx's steps a program can see: non-daemon threads joined, atexit handlers run,
    # stdio flushed; then out, without the module teardown that takes a torch process over a second.
    import atexit, threading
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)

import selectors
sel = selectors.DefaultSelector()
sel.register(ctl, selectors.EVENT_READ)
while True:
    readable = sel.select(timeout=0.05)
    reap()
    if not readable:
        continue
    msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 2)  # (its flags argument is ignored: select first)
    if not msg:
        break
    request = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        sel.close()
        child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    children[pid] = True
    ctl.sendall(json.dumps({"pid": pid}).encode() + b"\n")
"""


class Zygote:
    """The warmed interpreter of one test worker, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._env: dict[str, str] = {}
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._peaks: dict[int, int] = {}
        self._changed = threading.Condition()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._env = dict(os.environ)
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=self._env,
                                      cwd="/")
        theirs.close()
        self._ctl = ours
        if ours.recv(65536) != b'{"ready": true}\n':
            raise RuntimeError("the zygote exited before it was ready (its traceback is on stderr above)")
        threading.Thread(target=self._read, daemon=True, name="zygote-reader").start()

    def _read(self) -> None:
        assert self._ctl is not None
        while msg := self._ctl.recv(65536):
            reply = json.loads(msg)
            with self._changed:
                if "pid" in reply:
                    self._pids.append(reply["pid"])
                else:
                    self._exits[reply["exit"]] = reply["code"]
                    self._peaks[reply["exit"]] = reply["peak_kb"]
                self._changed.notify_all()

    def can_run(self, env: dict[str, str]) -> bool:
        """Whether a child would see the environment a fresh interpreter would (see RUNTIME_KEYS)."""
        base = self._env if self._proc else dict(os.environ)
        return all(env.get(k) == base.get(k) for k in set(env) | set(base) if k not in RUNTIME_KEYS)

    def popen(self, args: list[str], env: dict[str, str], cwd: Path, stderr_apart: bool = False,
              stopped: bool = False, script: Path | None = None) -> Forked:
        """``python -m smolvlm_watch.cli ARGS`` (or ``python SCRIPT ARGS``) as a child: its stdout
        and stderr on one pipe, or on two with ``stderr_apart``; with ``stopped`` it stops itself
        (SIGSTOP) just before the command line runs."""
        pipes = [os.pipe() for _ in range(1 + stderr_apart)]
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._ctl is not None
            request = json.dumps({"args": args, "env": env, "cwd": str(cwd), "stopped": stopped,
                                  "script": script and str(script)}).encode()
            with self._changed:
                known = len(self._pids)
                socket.send_fds(self._ctl, [request], [write for _, write in pipes])
                for _, write in pipes:
                    os.close(write)
                if not self._changed.wait_for(lambda: len(self._pids) > known, 30):
                    raise RuntimeError("the zygote did not fork")
                pid = self._pids[known]
        out, *err = (os.fdopen(read, "r", encoding="utf-8", errors="replace") for read, _ in pipes)
        return Forked(self, pid, out, err[0] if err else None)

    def peak_mb(self, pid: int) -> float:
        """An exited child's peak resident memory (its own, as getrusage reports it)."""
        with self._changed:
            return self._peaks[pid] / 1024

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)


class Forked:
    """The part of ``subprocess.Popen`` the tests use, for a child of the zygote."""

    def __init__(self, zygote: Zygote, pid: int, stdout, stderr) -> None:
        self._zygote = zygote
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self.tracer: subprocess.Popen | None = None  # strace, where it runs under one

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(["smolvlm_watch.cli"], timeout or 0)
        if self.tracer is not None:
            self.tracer.wait(30)  # it exits with its tracee
        return self.returncode

    def peak_mb(self) -> float:
        """Its peak RSS in MB, once it has exited."""
        self.wait()
        return self._zygote.peak_mb(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str | None]:
        """Everything the child writes until it exits, read as it comes (a full pipe would block it)."""
        end = None if timeout is None else time.monotonic() + timeout
        streams = [s for s in (self.stdout, self.stderr) if s is not None]
        texts: dict[int, str] = {}
        readers = [threading.Thread(target=lambda i=i, s=s: texts.__setitem__(i, s.read()), daemon=True)
                   for i, s in enumerate(streams)]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(None if end is None else max(0.1, end - time.monotonic()))
        if any(reader.is_alive() for reader in readers):
            raise subprocess.TimeoutExpired(["smolvlm_watch.cli"], timeout or 0)
        for stream in streams:
            stream.close()
        return texts[0], texts.get(1)


ZYGOTE = Zygote()


def cli_process(args: list[str], cwd: Path, env: dict[str, str] | None = None, fresh: bool = False,
                stderr_apart: bool = False) -> Forked | subprocess.Popen:
    """``python -m smolvlm_watch.cli ARGS``: a child of the zygote where it can be one, else (or
    with ``fresh``) a fresh interpreter; stdout and stderr on one text pipe unless ``stderr_apart``."""
    full = {**os.environ, **(env or {})}
    if not fresh and ZYGOTE.can_run(full):
        return ZYGOTE.popen(args, full, cwd, stderr_apart)
    return subprocess.Popen([sys.executable, "-m", "smolvlm_watch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT, text=True, env=full,
                            cwd=cwd)


def cli_run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run`` of the same command line, stdout and stderr captured apart."""
    proc = cli_process(args, cwd, env, fresh, stderr_apart=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.wait(), out, err)


def script_run(script: Path, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` as a child (a bench's parent process: what it starts itself is fresh)."""
    proc = ZYGOTE.popen(args, dict(os.environ), cwd, stderr_apart=True, script=script)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess([str(script), *args], proc.wait(), out, err)


def cli_killed_at_rename(args: list[str], cwd: Path, rename: int, stderr_apart: bool = False) -> Forked:
    """The command line as a child under strace, which kills it with SIGKILL as it enters its
    ``rename``-th rename from the command's start (that rename does not happen)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs Debian's strace)")
    proc = ZYGOTE.popen(args, dict(os.environ), cwd, stderr_apart, stopped=True)
    _until(lambda: _proc_field(proc.pid, "State:").startswith("T"), "the child to stop")
    proc.tracer = subprocess.Popen([strace, "-f", "-qq", "-o", os.devnull, "-p", str(proc.pid), "-e",
                                    f"inject=rename,renameat,renameat2:signal=SIGKILL:when={rename}"])
    tracer = proc.tracer
    _until(lambda: _proc_field(proc.pid, "TracerPid:") != "0" or tracer.poll() is not None, "strace to attach")
    if tracer.poll() is not None:
        proc.kill()
        raise AssertionError(f"strace could not attach to {proc.pid} (exit {tracer.returncode})")
    os.kill(proc.pid, signal.SIGCONT)
    return proc


def _proc_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name):
            return line.split(maxsplit=1)[1]
    raise KeyError(name)


def _until(predicate, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
