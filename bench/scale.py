"""A big library on this machine: the journal's cost as it grows, rescans, and a live file meanwhile.

    python bench/scale.py --files 100000          # one JSON line per size
    python bench/scale.py --files 100000 1000000
    python bench/scale.py --quick                 # 2,000 files, a 300-file burst: a CI smoke run

For each size N, in a fresh subprocess (its peak memory is its own): a tree of N small photos in
folders of 1,000, each "already processed". The documented shortcut: the sidecars are rendered by
the project's own ``render_json`` and the journal rows and search passages inserted in bulk with
the columns a `done` job has (fingerprint current, outputs recorded, passages indexed) -- the
same rows and files the daemon would have left, without running the model N times. Then:

- ``ready_s``: the daemon built (journal, watches armed, the startup scan) with the model not
  loaded (``model.preload: false``), and ``rss_mb_before_model``;
- ``rescan_cpu_s`` / ``rescan_wall_s``: one safety rescan of the whole tree (unchanged folders
  taken from the walk's memory), ``rescan_full_cpu_s`` / ``rescan_full_wall_s``: the full walk
  every ``FULL_WALK_EVERY``-th rescan makes, and ``rescan_cpu_per_interval``: their average CPU
  as a share of ``state.rescan_interval`` (target ≤ 0.05); the folders' mtimes are set an hour
  back, as a library's are;
- ``live_latency_during_rescan_s``: a file dropped while a rescan runs, until it is done (tiny
  model, loaded), against ``live_latency_idle_s`` with no rescan;
- ``burst_rate_ratio``: a burst of new files processed by the daemon: files/s over its last 20%
  against its first 20% (flat is 1.0);
- ``status_s``, ``panel_s``; ``search_p95_ms`` for ``beach number``, which every file's caption
  holds (the worst case: every row is ranked), ``search_rare_p95_ms`` for a number only one
  file's caption holds (what a search for a place or a name is like); ``journal_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_FOLDER = 1000


def build_tree(root: Path, files: int, model: Path) -> Path:
    """N photos with current sidecars, their journal rows and passages; the config's path."""
    from PIL import Image

    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.journal import Journal
    from smolvlm_watch.pipeline import Pipeline
    from smolvlm_watch.sidecar import SidecarRecord, render_json, sha256_bytes

    inbox = root / "library"
    cfg = root / "config.yaml"
    cfg.write_text(f"model: {{path: {model}, threads: 1, preload: false}}\n"
                   "tasks: {caption: {max_new_tokens: 2}}\n"
                   f"watches: [{{path: {inbox}, tasks: [caption], outputs: [json], settle_seconds: 0.3}}]\n"
                   f"state: {{db: {root / 'state' / 'journal.sqlite'}}}\nlogging: {{format: json, level: warning}}\n")
    config, registry = load_checked(cfg)
    watch = config.watches[0]
    fp = Pipeline(config, registry, registry.engine(config)).fingerprint(watch)
    journal = Journal(config.state.db, exclusive=True)
    rows, passages = [], []
    for i in range(files):
        folder = inbox / f"{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        path = folder / f"IMG_{i:07d}.png"
        Image.new("RGB", (48, 32), (i % 256, i // 256 % 256, i // 65536 % 256)).save(path)  # each its own content
        data = path.read_bytes()
        sha, st = sha256_bytes(data), path.stat()
        caption = f"a blue photo number {i} at the beach"
        record = SidecarRecord(source={"path": str(path), "size": st.st_size, "mtime": st.st_mtime, "sha256": sha,
                                       "kind": "image"},
                               model={"id": str(model)}, tasks={"caption": {"result": caption, "fingerprint": fp}})
        side = render_json(record)
        (folder / f"{path.name}.smolvlm.json").write_bytes(side)
        rows.append([str(path), str(watch.path), st.st_size, st.st_mtime, sha, fp,
                     json.dumps({f"{path.name}.smolvlm.json": sha256_bytes(side)})])
        passages.append((str(path), str(watch.path), caption))
    now = time.time()  # recorded after the sidecars were written, as a daemon records a job done after its set
    with journal._tx():
        journal.db.executemany(
            "INSERT INTO jobs (path, watch, size, mtime, sha256, fingerprint, outputs, state, priority, force, created,"
            " updated, finished, indexed) VALUES (?, ?, ?, ?, ?, ?, ?, 'done', 1, 0, ?, ?, ?, ?)",
            [(*r, now, now, now, now) for r in rows])
        journal.db.executemany("INSERT INTO passages (path, watch, task, kind, created, text)"
                               " VALUES (?, ?, 'caption', 'image', ?, ?)", [(p, w, now, t) for p, w, t in passages])
    journal.close()
    old = now - 3600  # a library that has not been written to for an hour: its folders' mtimes say so
    for folder in [inbox, *inbox.iterdir()]:
        os.utime(folder, (old, old))
    return cfg


def measure(cfg: Path, files: int, burst: int) -> dict:
    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.cli.ops import _status
    from smolvlm_watch.daemon import Daemon
    from smolvlm_watch.web import Web
    from smolvlm_watch.watcher import FULL_WALK_EVERY

    start = time.perf_counter()
    daemon = Daemon(cfg, lambda: load_checked(cfg))
    ready = time.perf_counter() - start
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rescan_cpu, rescan_wall = _rescan(daemon)
    for armed in daemon.watches.armed:  # the next one lists every folder, as every FULL_WALK_EVERY-th does
        if armed.memo is not None:
            armed.memo.rescans = FULL_WALK_EVERY - 1
    full_cpu, full_wall = _rescan(daemon)
    status_s = _timed(lambda: _status(daemon.config, daemon.journal))
    panel_s = _timed(lambda: Web(daemon.config, daemon.journal)._panel())
    searches = [_timed(lambda: daemon.journal.index.search("beach number", limit=20)) for _ in range(20)]
    rare = [_timed(lambda: daemon.journal.index.search(str(files // 2 + 100), limit=20)) for _ in range(20)]
    daemon.engine.load()
    daemon.worker.start()
    loop = threading.Thread(target=daemon.supervisor.run, daemon=True)
    loop.start()
    inbox = daemon.config.watches[0].path
    try:
        idle = _live(daemon, inbox / "live-idle.png")
        rescan = threading.Thread(target=daemon.scan_all)
        rescan.start()
        during = _live(daemon, inbox / "live-during.png")
        rescan.join()
        ratio = _burst(daemon, inbox / "burst", burst)
    finally:
        daemon.stop()
        loop.join(10)
        daemon.shutdown()
    return {"files": files, "ready_s": round(ready, 2), "rss_mb_before_model": round(rss_before, 1),
            "rescan_cpu_s": round(rescan_cpu, 3), "rescan_wall_s": round(rescan_wall, 3),
            "rescan_full_cpu_s": round(full_cpu, 3), "rescan_full_wall_s": round(full_wall, 3),
            "rescan_cpu_per_interval": round(((FULL_WALK_EVERY - 1) * rescan_cpu + full_cpu) / FULL_WALK_EVERY
                                             / daemon.config.state.rescan_interval, 6),
            "live_latency_idle_s": round(idle, 2), "live_latency_during_rescan_s": round(during, 2),
            "burst_files": burst, "burst_rate_ratio": round(ratio, 3), "status_s": round(status_s, 3),
            "panel_s": round(panel_s, 3), "search_p95_ms": round(statistics.quantiles(searches, n=20)[-1] * 1000, 2),
            "search_rare_p95_ms": round(statistics.quantiles(rare, n=20)[-1] * 1000, 2),
            "journal_mb": round(daemon.config.state.db.stat().st_size / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _rescan(daemon) -> tuple[float, float]:
    """One safety rescan of every watch: its CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    daemon.scan_all()
    return time.process_time() - cpu, time.perf_counter() - wall


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _live(daemon, path: Path) -> float:
    """A file copied in, until the journal says it is done (its settle time included)."""
    from PIL import Image

    Image.new("RGB", (48, 32), (7, 7, 7 + len(path.name))).save(path.with_suffix(".tmp"), "PNG")
    start = time.perf_counter()
    os.replace(path.with_suffix(".tmp"), path)
    _until(lambda: (job := daemon.journal.get(str(path))) is not None and job.state == "done")
    return time.perf_counter() - start


def _burst(daemon, folder: Path, count: int) -> float:
    """``count`` new distinct photos at once; the rate over the last 20% against the first 20%,
    from the journal's own ``finished`` times (read once at the end: polling the journal hard
    meanwhile would measure the bench)."""
    from PIL import Image

    folder.mkdir()
    done_before = daemon.journal.counts()["done"]
    paths = []
    for i in range(count):
        path = folder / f"new-{i:06d}.png"
        Image.new("RGB", (48, 32), (i % 256, (i // 256) % 256, 7)).save(path)
        paths.append(str(path))
    wanted = len(paths)
    _until(lambda: daemon.journal.counts()["done"] >= done_before + wanted, 3600, 0.5)  # cheap to ask
    stamps = sorted(job.finished for p in paths if (job := daemon.journal.get(p)) is not None and job.finished)
    k = max(2, count // 5)
    first, last = stamps[k - 1] - stamps[0], stamps[-1] - stamps[-k]
    return (k - 1) / last / ((k - 1) / first) if first > 0 and last > 0 else 1.0


def _until(predicate, timeout: float = 600, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, nargs="+", default=[100_000])
    p.add_argument("--burst", type=int, default=2000, help="new files in the burst phase")
    p.add_argument("--quick", action="store_true", help="2,000 files, a 300-file burst")
    p.add_argument("--phase", choices=["build", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:  # one size, in this process
        root, files = Path(args.dir), args.files[0]
        if args.phase == "build":
            from smolvlm_watch.testing import build_model

            build_tree(root, files, build_model(root / "tiny"))
        else:
            print(json.dumps(measure(root / "config.yaml", files, args.burst)))
        return 0
    if args.quick:
        args.files, args.burst = [2000], 300
    for files in args.files:
        with tempfile.TemporaryDirectory(prefix="smolvlm-scale-") as tmp:
            for phase in ("build", "measure"):  # built apart: the measured process holds only the daemon
                proc = subprocess.run([sys.executable, __file__, "--phase", phase, "--dir", tmp, "--files", str(files),
                                       "--burst", str(args.burst)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"bench: {phase} of {files} files failed:\n{proc.stderr[-3000:]}")
        print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SMOLVLM_WATCH_LOAD_ENTRYPOINTS", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
