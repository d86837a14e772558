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
command whose environment differs from the session's in a key read at import
(``IMPORT_TIME_PREFIXES``) gets a fresh interpreter too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# Environment variables the imported libraries read at import (huggingface_hub's and transformers'
# paths and offline flags, torch's and the BLAS/OpenMP runtimes' settings, the interpreter's and
# the C library's own): a child whose environment differs in one would not see what a fresh
# interpreter sees, so it gets a fresh one. Anything else is read when the code runs, in the child
# (NOTIFY_SOCKET, STATE_DIRECTORY, ...; PYTHONPATH is put on sys.path as the interpreter would),
# or is what libraries write into the test worker's own environment as they run
# (TORCHINDUCTOR_CACHE_DIR, TOKENIZERS_PARALLELISM), which a fresh interpreter would inherit too.
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "OPENBLAS_",
                        "KMP_", "CUDA_", "LD_", "MALLOC_", "LC_", "PYTHON")
IMPORT_TIME_KEYS = frozenset({"LANG", "HOME", "XDG_CACHE_HOME"})


def _read_at_import(key: str) -> bool:
    return key != "PYTHONPATH" and (key in IMPORT_TIME_KEYS or key.startswith(IMPORT_TIME_PREFIXES))


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
children = set()

def reap():
    while children:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
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
    children.add(pid)
    ctl.sendall(json.dumps({"pid": pid}).encode() + b"\n")
"""


class Zygote:
    """The warmed interpreter of one test worker, started on first use."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env  # what it imports under, whenever it (re)starts
        self._lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._pids: list[int] = []
        self._ended: dict[int, tuple[int, int]] = {}  # pid: (exit status, peak RSS in kB)
        self._changed = threading.Condition()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=self.env,
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
                    self._ended[reply["exit"]] = (reply["code"], reply["peak_kb"])
                self._changed.notify_all()

    def differences(self, env: dict[str, str]) -> list[str]:
        """The keys read at import in which ``env`` differs from the zygote's: a child would not see
        what a fresh interpreter with ``env`` sees."""
        return sorted(k for k in set(env) | set(self.env) if _read_at_import(k) and env.get(k) != self.env.get(k))

    def popen(self, args: list[str], env: dict[str, str], cwd: Path, stderr_apart: bool = False,
              stopped: bool = False, script: Path | None = None) -> Forked:
        """``python -m smolvlm_watch.cli ARGS`` (or ``python SCRIPT ARGS``) as a child: its stdout
        and stderr on one pipe, or on two with ``stderr_apart``; with ``stopped`` it stops itself
        (SIGSTOP) just before the command line runs."""
        if differ := self.differences(env):
            raise AssertionError(f"a child would not see {differ} as a fresh interpreter does: start one instead")
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

    def ended(self, pid: int, timeout: float | None) -> tuple[int, int] | None:
        """A child's exit status and peak RSS in kB (its own, as wait4 reports it); None while it runs."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._ended, timeout)
            return self._ended.get(pid)


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
        ended = self._zygote.ended(self.pid, 0)
        self.returncode = None if ended is None else ended[0]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        ended = self._zygote.ended(self.pid, timeout)
        if ended is None:
            raise subprocess.TimeoutExpired(["smolvlm_watch.cli"], timeout or 0)
        if self.tracer is not None:
            self.tracer.wait(30)  # it exits with its tracee
        self.returncode = ended[0]
        return self.returncode

    def peak_mb(self) -> float:
        """Its peak RSS in MB, once it has exited."""
        self.wait()
        return self._zygote.ended(self.pid, 0)[1] / 1024

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


# The environment the session starts with (conftest.py has set its keys by now), not whatever a
# test has patched in when the first child is asked for: a patched key gets a fresh interpreter.
ZYGOTE = Zygote(dict(os.environ))


def cli_process(args: list[str], cwd: Path, env: dict[str, str] | None = None, fresh: bool = False,
                stderr_apart: bool = False) -> Forked | subprocess.Popen:
    """``python -m smolvlm_watch.cli ARGS``: a child of the zygote where it can be one, else (or
    with ``fresh``) a fresh interpreter; stdout and stderr on one text pipe unless ``stderr_apart``."""
    full = {**os.environ, **(env or {})}
    if not fresh and not ZYGOTE.differences(full):
        return ZYGOTE.popen(args, full, cwd, stderr_apart)
    return subprocess.Popen([sys.executable, "-m", "smolvlm_watch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT, text=True, env=full,
                            cwd=cwd)


def cli_run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run`` of the same command line, stdout and stderr captured apart."""
    return completed(cli_process(args, cwd, env, fresh, stderr_apart=True), args, timeout)


def script_run(script: Path, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` as a child (a bench's parent process: what it starts itself is fresh)."""
    proc = ZYGOTE.popen(args, dict(os.environ), cwd, stderr_apart=True, script=script)
    return completed(proc, [str(script), *args], timeout)


def completed(proc: Forked | subprocess.Popen, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """What ``subprocess.run`` returns, once ``proc`` has ended (killed if it outlives ``timeout``)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.wait(), out, err)
