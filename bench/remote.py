"""The remote backend's client alone: what it costs to feed a GPU server.

    python bench/remote.py                  # 6 seeded 24 MP JPEGs and 6 1024x768 photos, caption+tags+ocr
    python bench/remote.py --quick          # 2 + 2 smaller photos: a smoke run for CI

A local OpenAI-compatible server that answers at once (smolvlm_watch.testing.InstantServer)
stands in for the GPU, so what is measured is the client: decoding, resizing, encoding, HTTP.
The same files go through `process`'s code path (decode, requests, sidecars) twice in one run:
with today's client and with the client as it was (full-size decode, a PNG per request, nothing
shared), and each configuration prints one JSON line: photos/s, requests/s, bytes per request
(mean, max), client CPU seconds per photo, and the ratios old/new.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smolvlm_watch import config as configmod
from smolvlm_watch import fixtures
from smolvlm_watch.config import ImageSettings
from smolvlm_watch.pipeline import FileJob, Pipeline
from smolvlm_watch.plugins import Registry
from smolvlm_watch.remote import RemoteRuntime, data_url
from smolvlm_watch.testing import InstantServer


class AsBefore(RemoteRuntime):
    """The client before issue 16: the photo decoded whole, a PNG of it per request."""

    def image_edge(self, settings: ImageSettings) -> int | None:
        return None

    def _body(self, request: Any) -> dict[str, Any]:
        from smolvlm_watch.remote import to_openai

        return {"model": self.config.name, "messages": to_openai(request, lambda img: data_url(img, "png")),
                "max_tokens": request.generation.max_new_tokens, "temperature": 0.0, "stream": False}


def photos(folder: Path, quick: bool) -> dict[str, list[Path]]:
    camera, photo, n = ((3000, 2000), (1024, 768), 2) if quick else (fixtures.CAMERA, (1024, 768), 6)
    return {"camera": [fixtures.camera_jpeg(folder / "camera" / f"c{i}.jpg", camera, seed=i) for i in range(n)],
            "photo": [fixtures.camera_jpeg(folder / "photo" / f"p{i}.jpg", photo, seed=100 + i) for i in range(n)]}


def run(engine_cls: type[RemoteRuntime], files: list[Path], url: str, out: Path) -> dict[str, Any]:
    cfg = configmod.parse({
        "model": {"backend": "openai", "base_url": url, "name": "instant", "concurrency": 8},
        "watches": [{"path": str(files[0].parent), "tasks": ["caption", "tags", "ocr"], "outputs": ["json"],
                     "output_dir": str(out)}]}, out)
    engine = engine_cls(cfg.model, cfg.runtime)
    pipeline = Pipeline(cfg, Registry(entrypoints=False), engine)
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = [r for _, r in pipeline.process_many([FileJob(p, cfg.watches[0], force=True) for p in files])]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(r.status == "done" for r in results), [r.error for r in results]
    return {"wall": wall, "cpu": cpu}


def measure(files: list[Path], kind: str, runs: int) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, list[int]] = {}
    for _ in range(runs):
        for name, cls in (("before", AsBefore), ("now", RemoteRuntime)):  # alternated: noise hits both
            with InstantServer() as server, tempfile.TemporaryDirectory() as out:
                got = run(cls, files, server.url, Path(out))
                row = rows.setdefault(name, {"photos_per_s": [], "requests_per_s": [], "cpu_per_photo": []})
                row["photos_per_s"].append(len(files) / got["wall"])
                row["requests_per_s"].append(len(server.requests) / got["wall"])
                row["cpu_per_photo"].append(got["cpu"] / len(files))
                sizes[name] = [r["bytes"] for r in server.requests]
    out: dict[str, Any] = {"photos": kind, "files": len(files), "tasks": ["caption", "tags", "ocr"], "runs": runs}
    for name, row in rows.items():
        out[name] = {k: [round(v, 3) for v in vs] for k, vs in row.items()}
        out[name]["bytes_per_request_mean"] = round(statistics.mean(sizes[name]))
        out[name]["bytes_per_request_max"] = max(sizes[name])
        out[name]["bytes_per_photo"] = round(sum(sizes[name]) / len(files))
    med = {n: {k: statistics.median(v) for k, v in rows[n].items()} for n in rows}
    out["ratio_bytes"] = round(out["before"]["bytes_per_photo"] / out["now"]["bytes_per_photo"], 1)
    out["ratio_cpu"] = round(med["before"]["cpu_per_photo"] / med["now"]["cpu_per_photo"], 1)
    out["ratio_photos_per_s"] = round(med["now"]["photos_per_s"] / med["before"]["photos_per_s"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 + 2 smaller photos, one run: a smoke run for CI")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "remote")
    args = p.parse_args(argv)
    folder = args.dir / ("quick" if args.quick else "full")
    sets = photos(folder, args.quick)
    for kind, files in sets.items():
        print(json.dumps(measure(files, kind, 1 if args.quick else args.runs)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
