"""The remote backend's client alone: what it costs to feed a GPU server.

    python bench/remote.py                  # seeded 24 MP JPEGs and 1024x768 photos, caption+tags+ocr
    python bench/remote.py --quick          # a few smaller photos, one run: a smoke run for CI
    python bench/remote.py --serve 0        # the instant server only

A local OpenAI-compatible server that answers at once (``python -m smolvlm_watch.testing
instant-server``, in its own process, so its CPU is not counted as the client's) stands in for
the GPU: what is measured is the client, decoding, resizing, encoding, HTTP. The files go through
`process`'s code path (decode, requests, sidecars) with the backend already loaded, so the rate is
the sustained one: with today's client, over 4 names for each of the seeded photos, and with the
client as it was (full-size decode, a PNG per request, nothing shared, nothing ahead), over the
seeded photos once, being ~40x slower. Each photo set prints one JSON line: photos/s, requests/s,
bytes per request (mean, max), client CPU seconds per photo, each run's figure (the spread), and
the ratios old/new of the medians. Then (``--serve N``, default 1) both clients send N photos of
each set to a real `transformers serve` of the 256M preset on 127.0.0.1 (16 new tokens per
question): what a server that decodes and resizes what it gets makes of the client's savings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
from smolvlm_watch.media.image import AS_IS
from smolvlm_watch.remote import RemoteModel, RemoteRuntime, data_url, fitted
from smolvlm_watch.runtime import TransformersModel, placement
from smolvlm_watch.testing import ModelServer


class AsBefore(RemoteRuntime):
    """The client before issue 16: the photo decoded whole, a PNG of it per request, each
    request sent when its batch runs."""

    def image_edge(self, settings: ImageSettings) -> int | None:
        return None

    def preprocess(self, requests: Any) -> None:
        pass

    def _body(self, request: Any, url: Any = None) -> dict[str, Any]:
        from smolvlm_watch.remote import to_openai

        return {"model": self.config.name, "messages": to_openai(request, lambda img: data_url(_plain(img), "png")),
                "max_tokens": request.generation.max_new_tokens, "temperature": 0.0, "stream": False}


def _plain(img: Any) -> Any:
    """The pixels without the JPEG stream the decoder now keeps: the old client had none."""
    img = img.copy()
    img.info.pop(AS_IS, None)
    return img


class Elsewhere:
    """The instant server in a process of its own; ``sizes`` once it has stopped."""

    def __enter__(self) -> Elsewhere:
        self.proc = subprocess.Popen([sys.executable, "-m", "smolvlm_watch.testing", "instant-server"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        return self

    def __exit__(self, *_: object) -> None:
        out = self.proc.communicate("", timeout=60)[0]
        self.sizes: list[int] = json.loads(out.strip().splitlines()[-1])["bytes"]


def photos(folder: Path, quick: bool) -> dict[str, list[Path]]:
    camera, photo, n = ((3000, 2000), (1024, 768), 2) if quick else (fixtures.CAMERA, (1024, 768), 6)
    return {"camera": [fixtures.camera_jpeg(folder / "camera" / f"c{i}.jpg", camera, seed=i) for i in range(n)],
            "photo": [fixtures.camera_jpeg(folder / "photo" / f"p{i}.jpg", photo, seed=100 + i) for i in range(n)]}


def names(files: list[Path], copies: int) -> list[Path]:
    """``copies`` names (hard links) for each file: a longer run over the same seeded photos."""
    out = []
    for k in range(copies):
        for f in files:
            link = f.parent / "links" / f"{f.stem}-{k}{f.suffix}"
            link.parent.mkdir(exist_ok=True)
            if not link.exists():
                os.link(f, link)
            out.append(link)
    return out


def run(engine_cls: type[RemoteRuntime], files: list[Path], url: str, out: Path, name: str = "instant",
        tokens: int | None = None) -> dict[str, Any]:
    tasks = {t: {"max_new_tokens": tokens} for t in ("caption", "tags", "ocr")} if tokens else {}
    registry = Registry(entrypoints=False)
    cfg = registry.check(configmod.parse({
        "model": {"backend": "openai", "base_url": url, "name": name, "concurrency": 8, "timeout": 600},
        "tasks": tasks,
        "watches": [{"path": str(files[0].parent), "tasks": ["caption", "tags", "ocr"], "outputs": ["json"],
                     "output_dir": str(out)}]}, out))
    assert isinstance(cfg.model, RemoteModel)
    engine = engine_cls(cfg.model, cfg.runtime)
    engine.load()  # the rate is the sustained one, not the start (nor torch's import for the resize)
    fitted(fixtures.scene((64, 48)), 32)
    pipeline = Pipeline(cfg, registry, engine)
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = [r for _, r in pipeline.process_many([FileJob(p, cfg.watches[0], force=True) for p in files])]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(r.status == "done" for r in results), [r.error for r in results]
    return {"wall": wall, "cpu": cpu}


def measure(files: list[Path], kind: str, runs: int, copies: int) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, list[int]] = {}
    sets = {"before": files, "now": names(files, copies)}
    for i in range(runs):
        for name, cls in (("before", AsBefore), ("now", RemoteRuntime)):  # alternated: noise hits both
            if name == "before" and i > 0:
                continue  # one run of the old client: it is slow, and far from the new
            with Elsewhere() as server, tempfile.TemporaryDirectory() as folder:
                got = run(cls, sets[name], server.url, Path(folder))
            n = len(sets[name])
            row = rows.setdefault(name, {"photos_per_s": [], "requests_per_s": [], "cpu_per_photo": []})
            row["photos_per_s"].append(n / got["wall"])
            row["requests_per_s"].append(len(server.sizes) / got["wall"])
            row["cpu_per_photo"].append(got["cpu"] / n)
            sizes[name] = server.sizes
    out: dict[str, Any] = {"photos": kind, "files": {k: len(v) for k, v in sets.items()},
                           "tasks": ["caption", "tags", "ocr"],
                           "runs": {k: len(v["photos_per_s"]) for k, v in rows.items()}}
    for name, row in rows.items():
        out[name] = {k: [round(v, 3) for v in vs] for k, vs in row.items()}
        out[name]["bytes_per_request_mean"] = round(statistics.mean(sizes[name]))
        out[name]["bytes_per_request_max"] = max(sizes[name])
        out[name]["bytes_per_photo"] = round(sum(sizes[name]) / len(sets[name]))
    med = {n: {k: statistics.median(v) for k, v in rows[n].items()} for n in rows}
    out["ratio_bytes"] = round(out["before"]["bytes_per_photo"] / out["now"]["bytes_per_photo"], 1)
    out["ratio_cpu"] = round(med["before"]["cpu_per_photo"] / med["now"]["cpu_per_photo"], 1)
    out["ratio_photos_per_s"] = round(med["now"]["photos_per_s"] / med["before"]["photos_per_s"], 1)
    return out


def served(sets: dict[str, list[Path]], count: int, tokens: int) -> list[dict[str, Any]]:
    """Both clients against a real ``transformers serve`` of the 256M preset on this CPU: what a
    slow server makes of the client's savings (it decodes and resizes what it is sent)."""
    import throughput

    model = throughput.model_dir("256M")
    rows = []
    dtype = placement(TransformersModel(device="cpu")).dtype  # what this CPU computes fastest, as in-process
    with ModelServer(model, dtype=dtype) as server, tempfile.TemporaryDirectory() as folder:
        for kind, files in sets.items():
            row: dict[str, Any] = {"server": "transformers serve, 256M preset, CPU", "photos": kind,
                                   "files": count, "new_tokens": tokens}
            for name, cls in (("before", AsBefore), ("now", RemoteRuntime)):
                got = run(cls, files[:count], server.url, Path(folder) / name / kind, str(model), tokens)
                row[name] = {"photos_per_s": round(count / got["wall"], 4),
                             "requests_per_s": round(3 * count / got["wall"], 3),
                             "cpu_per_photo": round(got["cpu"] / count, 3)}
            row["ratio_photos_per_s"] = round(row["now"]["photos_per_s"] / row["before"]["photos_per_s"], 2)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 + 2 smaller photos, one run: a smoke run for CI")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--serve", type=int, default=1, metavar="N",
                   help="photos of each set through a real transformers serve of the 256M preset (0: skip)")
    p.add_argument("--serve-tokens", type=int, default=16, help="new tokens per question against that server")
    p.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "remote")
    args = p.parse_args(argv)
    if args.quick:
        args.serve = 0  # the CI smoke run: no model server
    folder = args.dir / ("quick" if args.quick else "full")
    sets = photos(folder, args.quick)
    for kind, files in sets.items():
        print(json.dumps(measure(files, kind, 1 if args.quick else args.runs, 1 if args.quick else 4)), flush=True)
    if args.serve:
        for row in served(sets, args.serve, args.serve_tokens):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
