"""What the tests share: generated images, sidecar reading, trap plugins, the daemon harness
(in-process and as a real subprocess) and its journal, peak memory of a subprocess run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from smolvlm_watch.cli import load_checked
from smolvlm_watch import daemon as daemon_module
from smolvlm_watch.daemon import Daemon
from smolvlm_watch.journal import Journal, JournalError
from zygote import ZYGOTE, Forked, cli_process



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


def process_peak_mb(path: Path, config: Path) -> float:
    """`process PATH -c CONFIG --json` as a real process, a child of the warmed interpreter; its
    peak RSS in MB (it must succeed). That is ~300 MB under a fresh interpreter's (library pages
    the child never touches are not its own), so compare it only with another run's figure."""
    proc = ZYGOTE.popen(["process", str(path), "-c", str(config), "--json"], dict(os.environ), config.parent,
                        stderr_apart=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (err or "")[-2000:]
    assert json.loads(out)["failed"] == []
    return proc.peak_mb()


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def daemon_config(tmp_path: Path, tiny_model: Path, extra_watch: str = "", extra: str = "",
                  tasks: str = "[caption]", outputs: str = "[json]") -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        model: {{path: {tiny_model}, threads: 1}}
        tasks:
          caption: {{max_new_tokens: 2}}
          ocr: {{max_new_tokens: 2, image_splitting: false}}
        watches:
          - path: ./inbox
            tasks: {tasks}
            outputs: {outputs}
            settle_seconds: 0.3
            poll_interval: 0.3
        {textwrap.indent(extra_watch, '  ')}
        state: {{db: ./state/journal.sqlite, retry_base_seconds: 0.05, max_attempts: 3}}
        logging: {{format: json}}
        """) + extra)
    return cfg


class InProcess:
    """The daemon in this process: built whole (journal, model, watches, first scan), its worker
    thread started, its supervisor ticking in a thread of its own."""

    def __init__(self, cfg: Path):
        self.daemon = Daemon(cfg, lambda: load_checked(cfg))
        self.daemon.worker.start()
        self.thread = threading.Thread(target=self.daemon.supervisor.run, daemon=True)
        self.thread.start()

    @property
    def journal(self) -> Journal:
        return self.daemon.journal

    def state(self, path: Path) -> str | None:
        job = self.journal.get(str(path))
        return job.state if job else None

    def wait_done(self, paths, timeout=60.0):
        wait_for(lambda: all(self.state(p) == "done" for p in paths), timeout, what=f"{len(paths)} files done")

    def stop(self):
        self.daemon.stop()
        self.thread.join(10)
        self.daemon.shutdown()


class Clock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class Driven:
    """The daemon built whole in this process (journal, model, watches, first scan) with no thread
    of its own: ``step(seconds)`` moves a fake clock, runs one supervisor tick (settle, health
    check, safety rescan, status, asked rescans), waits for the rescan that tick started, then
    runs the worker's tick, which does every due job here and now. Behaviour about time is
    then a count of steps, not a sleep. Live events still come from the real observer: wait for
    the path to reach the tracker (``heard``) before stepping past the settle time."""

    def __init__(self, cfg: Path):
        self.clock = Clock()
        self.daemon = Daemon(cfg, lambda: load_checked(cfg), clock=self.clock)

    @property
    def journal(self) -> Journal:
        return self.daemon.journal

    @property
    def armed(self):
        return self.daemon.watches.armed[0]

    def state(self, path: Path) -> str | None:
        job = self.journal.get(str(path))
        return job.state if job else None

    def step(self, seconds: float = 0.0) -> int:
        """One round at ``seconds`` later; returns how many results the worker recorded."""
        self.clock.now += seconds
        self.daemon.tick(self.clock.now)
        assert self.daemon.supervisor.wait_rescan(60), "a rescan still ran after 60 s"
        return self.daemon.worker.tick()

    def heard(self, *paths: Path, timeout: float = 10.0) -> None:
        """Wait until the observer has reported every path to its watch's tracker."""
        wait_for(lambda: all(any(p in a.tracker for a in self.daemon.watches.armed) for p in paths), timeout,
                 what=f"live events for {len(paths)} file(s)")

    def settle(self) -> int:
        """Two steps past the longest settle time: the quiet period, then the confirming look."""
        longest = max(a.watch.settle_seconds for a in self.daemon.watches.armed) + 0.01  # past it, float-safe
        return self.step(longest) + self.step(longest)

    def rescan(self) -> int:
        """Steps past the rescan's wait (its pace stretches while rescans find nothing) and the
        health check: one safety rescan, one look at every watch's folder, the jobs they queued."""
        wait = self.daemon.supervisor.pace.wait(self.daemon.config.state.rescan_interval)
        return self.step(max(wait, daemon_module.HEALTH_INTERVAL))

    def stop(self) -> bool:
        return self.daemon.shutdown()


def spawn(cfg: Path, env: dict | None = None, fresh: bool = False) -> Forked | subprocess.Popen:
    """`smolvlm-watch run -c CFG` as a real process, its stdout and stderr on one pipe: forked from
    the warmed interpreter (tests/zygote.py), or a fresh one with ``fresh`` where the subject is
    what the interpreter's start does (its first log lines, sd_notify)."""
    return cli_process(["run", "-c", str(cfg)], cfg.parent, env, fresh)


def cli_killed_at_rename(args: list[str], cwd: Path, rename: int, stderr_apart: bool = False) -> Forked:
    """The command line as a child of the warmed interpreter under strace, which kills it with
    SIGKILL as it enters its ``rename``-th rename from the command's start (that rename does not
    happen). The child stops itself before it runs; strace attaches (``-p``), then it goes on."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs Debian's strace)")
    proc = ZYGOTE.popen(args, dict(os.environ), cwd, stderr_apart, stopped=True)
    wait_for(lambda: _proc_field(proc.pid, "State:").startswith("T"), 30, 0.01, what="the child to stop")
    tracer = proc.tracer = subprocess.Popen([strace, "-f", "-qq", "-o", os.devnull, "-p", str(proc.pid), "-e",
                                             f"inject=rename,renameat,renameat2:signal=SIGKILL:when={rename}"])
    wait_for(lambda: _proc_field(proc.pid, "TracerPid:") != "0" or tracer.poll() is not None, 30, 0.01,
             what="strace to attach")
    if tracer.poll() is not None:
        proc.kill()
        raise AssertionError(f"strace could not attach to {proc.pid} (exit {tracer.returncode})")
    os.kill(proc.pid, signal.SIGCONT)
    return proc


def _proc_field(pid: int, name: str) -> str:
    """A line of /proc/PID/status, without its name."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name):
            return line.split(maxsplit=1)[1]
    raise KeyError(name)


def log_events(proc: Forked | subprocess.Popen) -> list[dict]:
    """A JSON-logging daemon's events as they arrive, read by a thread so a test can wait on one
    (every line must be JSON, or the reader fails loudly)."""
    events: list[dict] = []

    def read() -> None:
        for line in proc.stdout:
            events.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    return events


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def journal_states(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    try:
        j = Journal(db, readonly=True)
    except JournalError:
        return {}  # being created
    try:
        return {job.path: job.state for job in j.all()}
    finally:
        j.close()


def _glyph(ch: str) -> str:
    """The Adobe Glyph List name of a Cyrillic letter (afii100xx), which PDF readers map back to Unicode."""
    o = ord(ch)
    if o == 0x2116:
        return "afii61352"  # №
    if o == 0x401:
        return "afii10023"
    if o == 0x451:
        return "afii10071"
    if 0x410 <= o <= 0x415:
        return f"afii{10017 + o - 0x410}"
    if 0x416 <= o <= 0x42F:
        return f"afii{10024 + o - 0x416}"
    if 0x430 <= o <= 0x435:
        return f"afii{10065 + o - 0x430}"
    if 0x436 <= o <= 0x44F:
        return f"afii{10072 + o - 0x436}"
    raise ValueError(ch)


def text_pdf(path: Path, texts: list[str]) -> Path:
    """A minimal PDF with a real text layer, one page per text; Latin and Cyrillic letters (the
    Cyrillic ones through an encoding of glyph names, as old PDF writers did it)."""
    extra = sorted({c for t in texts for c in t if ord(c) > 126})
    codes = {c: 128 + i for i, c in enumerate(extra)}
    diffs = b" ".join(b"/" + _glyph(c).encode() for c in extra)
    font = (b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding "
            b"/BaseEncoding /WinAnsiEncoding /Differences [128 " + diffs + b"] >> >>")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", None, font]
    kids = []
    for text in texts:
        encoded = bytes(codes.get(c, ord(c)) for c in text)
        encoded = encoded.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        stream = b"BT /F1 24 Tf 72 700 Td (" + encoded + b") Tj ET"
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % len(objects))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def exif(path: Path, *tags: str) -> dict:
    tool = shutil.which("exiftool")
    if tool is None:
        pytest.skip("exiftool is not installed (.ci/run installs Debian's libimage-exiftool-perl)")
    out = subprocess.run([tool, "-j", "-charset", "utf8", *[f"-{t}" for t in tags], str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)[0]
    data.pop("SourceFile", None)
    return {k: v if isinstance(v, list) else [v] if k in ("Subject", "TagsList", "HierarchicalSubject") else v
            for k, v in data.items()}
