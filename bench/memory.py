"""Peak memory of one `process` run over a household's mix, at each precision a CPU may run in.

    python bench/memory.py                       # this CPU: dtype/quantize auto, against float32
    python bench/memory.py --isa avx2 --runs 2   # a NAS CPU (no native bf16): what a 4 GB box gets
    python bench/memory.py --quick               # tiny model: a CI smoke run

The mix is the one issue 27 measured: a 24 MP camera JPEG, a 12 MP HEIC, a 10 s 640x360 MP4 and a
3-page scanned PDF (image pages, no text layer), with caption, tags and OCR at their defaults and
JSON and text sidecars. Each variant runs `smolvlm-watch process` in a fresh interpreter; its peak
RSS (ru_maxrss) and wall time are printed per run, with the spread, and each variant's peak as a
ratio against the float32 baseline (``quantize: none``) measured in the same run. Target: the
default (``auto``) at most 2 GB (2048 MB) on a CPU without native bf16 (issue 27, 4).
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import ISA_CAP, model_dir  # noqa: E402

TARGET_MB = 2048
# each variant's config sections over the defaults ("auto")
VARIANTS: dict[str, dict[str, dict]] = {
    "auto": {}, "float32": {"model": {"dtype": "float32", "quantize": "none"}}, "int8": {"model": {"quantize": "int8"}},
    "batch4": {"runtime": {"max_batch": 4}}, "batch1": {"runtime": {"max_batch": 1}}}

_CHILD = """
import json, resource, sys, time
from smolvlm_watch.cli import main
t0 = time.perf_counter()
code = main(["process", sys.argv[1], "-c", sys.argv[2], "--json"])
print(json.dumps({"code": code, "seconds": time.perf_counter() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def household(folder: Path, quick: bool) -> list[Path]:
    """The mix: camera JPEG, HEIC, MP4, scanned PDF (smaller in --quick)."""
    import av
    import numpy as np

    from smolvlm_watch import fixtures

    folder.mkdir(parents=True, exist_ok=True)
    scale = 8 if quick else 1
    photo = fixtures.camera_jpeg(folder / "IMG_0001.JPG", size=(6000 // scale, 4000 // scale))
    phone = fixtures.heic(folder / "IMG_0002.HEIC", size=(4032 // scale, 3024 // scale), seed=1)
    video = folder / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(20 if quick else 100):
            frame = np.asarray(fixtures.scene((640, 360), seed=i // 25))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    pages = [fixtures.scene((1700 // scale, 2200 // scale), seed=10 + i).convert("RGB") for i in range(3)]
    scan = folder / "scan.pdf"
    pages[0].save(scan, "PDF", save_all=True, append_images=pages[1:], resolution=200)
    return [photo, phone, video, scan]


def run(folder: Path, model: Path, variant: dict, env: dict, out: Path) -> dict:
    sections = {**variant, "model": {"path": str(model), **variant.get("model", {})}}
    cfg = out / "config.yaml"
    cfg.write_text("".join(f"{name}: {json.dumps(keys)}\n" for name, keys in sections.items()) +
                   f"state: {{db: {out / 'state.db'}}}\n"
                   f"watches: [{{path: {folder}, tasks: [caption, tags, ocr], outputs: [json, txt], "
                   f"output_dir: {out / 'sidecars'}}}]\n")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(cfg)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    *_, report, result = proc.stdout.splitlines()  # process's own JSON, then the child's
    got = json.loads(report)
    return {**json.loads(result), "done": len(got["done"]), "failed": got["failed"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="256M", choices=["tiny", "256M", "500M", "2.2B"])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--variants", default="auto,float32,int8", help=f"any of {', '.join(VARIANTS)}")
    p.add_argument("--isa", choices=["avx2"], default=None, help="cap the CPU instruction set (a NAS CPU)")
    p.add_argument("--quick", action="store_true", help="tiny model, small media, one run: a CI smoke run")
    args = p.parse_args()
    env = {**os.environ, **ISA_CAP.get(args.isa or "", {})}
    model = model_dir("tiny" if args.quick else args.preset)
    names = args.variants.split(",")
    rows: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "household"
        household(folder, args.quick)
        for i in range(args.runs):
            for name in names:
                out = Path(tmp) / f"{name}-{i}"
                out.mkdir()
                t0 = time.perf_counter()
                rows[name].append(run(folder, model, VARIANTS[name], env, out))
                print(f"# {name} run {i + 1}: {rows[name][-1]['peak_mb']:.0f} MB, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    base = statistics.median(r["peak_mb"] for r in rows["float32"]) if "float32" in rows else None
    report = {"preset": "tiny" if args.quick else args.preset, "isa_capped": args.isa, "runs": args.runs,
              "files": "scaled down" if args.quick else ["24 MP JPEG", "12 MP HEIC", "10 s 640x360 MP4",
                                                            "3-page scanned PDF"], "variants": {}}
    for name, got in rows.items():
        peaks = [r["peak_mb"] for r in got]
        report["variants"][name] = {
            "peak_mb": [round(x) for x in peaks], "seconds": [round(r["seconds"], 1) for r in got],
            "peak_vs_float32": round(statistics.median(peaks) / base, 3) if base else None,
            "within_2gb": max(peaks) <= TARGET_MB, "done_files": [r["done"] for r in got],
            "failed_files": sum(len(r["failed"]) for r in got)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
