"""Decoding the photos people have: seconds per file to the picture the model looks at.

    python bench/decode.py              # 24 MP JPEG, 12 MP HEIC (8- and 10-bit), 24 MP DNG, 3 runs each
    python bench/decode.py --quick      # small files, one run: a smoke run for CI

Each case is timed against its baseline in the same run, on the same file, and printed as one
JSON line with the median, the spread (min-max) and the ratio baseline/ours:
- camera JPEG: ours (DCT-scaled draft decode to cover 2048 px) against Pillow's full decode
  plus orientation, which is what a naive decoder does;
- DNG with a large embedded preview: the preview against LibRaw's half-size demosaic;
- HEIC: no cheaper route exists (libheif decodes the whole image), so its baseline is itself,
  and the line says what an iPhone photo costs.
The fixtures are generated (smolvlm_watch.fixtures) and cached under bench/.cache/photos.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from collections.abc import Callable

HERE = Path(__file__).resolve().parent
EDGE = 2048  # SmolVLM2's processor longest_edge: what the model looks at


def cases(folder: Path, quick: bool) -> dict[str, Path]:
    from smolvlm_watch import fixtures

    camera, phone, raw = ((1500, 1000), (800, 600), (1200, 800)) if quick else (fixtures.CAMERA, (4032, 3024),
                                                                                 fixtures.CAMERA)
    preview = (raw[0] // 2, raw[1] // 2) if quick else (4000, 2667)  # cameras embed a large one
    made = {"camera_jpeg": folder / f"camera-{camera[0]}.jpg", "heic": folder / f"phone-{phone[0]}.heic",
            "heic_10bit": folder / f"phone-{phone[0]}-10bit.heic", "dng_preview": folder / f"raw-{raw[0]}.dng"}
    makers: dict[str, Callable[[Path], Path]] = {
        "camera_jpeg": lambda p: fixtures.camera_jpeg(p, camera),
        "heic": lambda p: fixtures.heic(p, phone, orientation=6),
        "heic_10bit": lambda p: fixtures.heic(p, phone, ten_bit=True),
        "dng_preview": lambda p: fixtures.dng(p, raw, preview=preview),
    }
    for name, path in made.items():
        if not path.exists():
            makers[name](path)
    return made


def ours(path: Path, edge: int | None) -> Callable[[], object]:
    from smolvlm_watch.media import Limits, open_media

    def run() -> object:
        with open_media(path) as opened:
            return opened.image(Limits(), edge)

    return run


def pillow_full(path: Path) -> Callable[[], object]:
    from PIL import Image, ImageOps

    def run() -> object:
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img.convert("RGB"))

    return run


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm: imports, the page cache
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def line(case: str, path: Path, ours_s: list[float], base_s: list[float], baseline: str) -> dict:
    m, b = statistics.median(ours_s), statistics.median(base_s)
    return {"case": case, "file": path.name, "mb": round(path.stat().st_size / 2**20, 1),
            "seconds": round(m, 3), "spread": [round(min(ours_s), 3), round(max(ours_s), 3)],
            "baseline": baseline, "baseline_seconds": round(b, 3),
            "baseline_spread": [round(min(base_s), 3), round(max(base_s), 3)], "ratio": round(b / m, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small files, one run: a smoke run for CI")
    p.add_argument("--dir", type=Path, default=HERE / ".cache" / "photos")
    args = p.parse_args(argv)
    runs = 1 if args.quick else args.runs
    folder = args.dir / ("quick" if args.quick else "full")
    folder.mkdir(parents=True, exist_ok=True)
    made = cases(folder, args.quick)
    rows = [
        line("camera_jpeg", made["camera_jpeg"], timed(ours(made["camera_jpeg"], EDGE), runs),
             timed(pillow_full(made["camera_jpeg"]), runs), "Pillow full decode + orientation"),
        line("dng_preview", made["dng_preview"], timed(ours(made["dng_preview"], EDGE), runs),
             timed(ours(made["dng_preview"], None), runs), "LibRaw half-size demosaic"),
    ]
    for case in ("heic", "heic_10bit"):
        s = timed(ours(made[case], EDGE), runs)
        rows.append(line(case, made[case], s, s, "itself (libheif decodes the whole image)"))
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
