"""CPU engines side by side, in one run: which one a home server should use.

    python bench/engines.py --preset 256M --images 2          # ~25 min on a 2-core CPU
    python bench/engines.py --quick                           # tiny model: a smoke run for CI

For caption + tags + OCR of the same seeded 1024x768 photos, exactly 64 new tokens each, every
configuration in a fresh process (its own peak memory): the reference loop of the transformers
docs (float32, one question at a time), then this project's `process` path with torch in the
precision `model.dtype: auto` picks (today's path: bf16 on a CPU with native bf16, float32
elsewhere; each row says which) and with `model.quantize: int8`, each at the tasks'
default image settings (caption and tags one tile, OCR 13 tiles) and at 13 tiles for every task.
Then the parts, in one process per engine: the vision tower alone (13 tiles, tile by tile as the
runtime runs it on a CPU, all at once, and tile by tile through `torch.compile`), the operators one
tile's time goes to, and one decoding step alone (ms per new token after an 886-token prompt).
Prints one JSON line per row; each photo row has its ratio against today's path at the same image
settings and against the reference loop, measured in the same run.
OpenVINO's rows come from `bench/openvino.py`, which needs an environment of its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import throughput

# Today's path runs in the precision `model.dtype: auto` picks on this CPU (bf16 where it is native,
# float32 elsewhere); int8 layers always sit in a float32 model. Each row says which it ran.
ENGINES = {"torch, today's precision": "none", "torch + int8 linear layers": "int8"}


def photo_rows(preset: str, images: int, tokens: int) -> list[dict[str, Any]]:
    args = SimpleNamespace(model=throughput.model_dir(preset), device="cpu", dtype="auto", batch=None,
                           compile=False, tasks="caption,tags,ocr", max_new_tokens=tokens, quantize="none",
                           task_defaults=False, isa=None)  # throughput.main's arguments
    rows = []
    with tempfile.TemporaryDirectory(prefix="smolvlm-engines-") as tmp:
        args.images_dir = Path(tmp)
        throughput.make_images(args.images_dir, images, throughput.PHOTO)
        ref = throughput.run_phase(args, "reference")
        rows.append({"engine": "reference loop (transformers docs), float32", "settings": "13 tiles",
                     "images_per_s": round(images / ref["seconds"], 4), "peak_rss_mb": ref["peak_rss_mb"]})
        for settings, defaults in (("task defaults", True), ("13 tiles", False)):
            today = None
            for engine, quantize in ENGINES.items():
                args.quantize, args.task_defaults = quantize, defaults
                ours = throughput.run_phase(args, "ours")
                ips = images / ours["seconds"]
                today = today or ips
                rows.append({"engine": engine, "dtype": ours["dtype"], "settings": settings,
                             "images_per_s": round(ips, 4),
                             "seconds_per_image": round(ours["seconds"] / images, 1),
                             "ratio_today": round(ips / today, 2),
                             "ratio_reference": round(ips * ref["seconds"] / images, 2),
                             "vision_passes": ours["vision_passes"], "peak_rss_mb": ours["peak_rss_mb"]})
    return rows


def parts(model: str, quantize: str, runs: int) -> dict[str, Any]:
    """The vision tower alone and one decoding step alone, in this process."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from smolvlm_watch import fixtures
    from smolvlm_watch.runtime import TransformersModel, int8_linear, placement

    processor = AutoProcessor.from_pretrained(model)
    dtype = placement(TransformersModel(path=Path(model), device="cpu", quantize=quantize)).dtype
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
    if quantize == "int8":
        net = int8_linear(net)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": throughput.PROMPTS["ocr"]}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       images=[fixtures.scene(throughput.PHOTO, 1)], return_tensors="pt")
    pixels, mask = inputs["pixel_values"][0], inputs["pixel_attention_mask"][0]
    with torch.inference_mode():
        tile_by_tile = _timed(lambda: [net.model.get_image_features(pixels[k:k + 1][None], mask[k:k + 1][None])
                                       for k in range(pixels.shape[0])], runs)
        all_at_once = _timed(lambda: net.model.get_image_features(pixels[None], mask[None]), runs)
        step = [_decode(net, inputs, 16) for _ in range(runs)]
        ops = _tile_ops(net, pixels[:1], mask[:1])
        compiled = _compiled_vision(net, pixels, mask, runs)
    return {"dtype": dtype, "tiles": int(pixels.shape[0]), "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "vision_tile_by_tile_s": tile_by_tile, "vision_all_at_once_s": all_at_once,
            "vision_one_tile_ops_ms": ops, **compiled,
            "decode_step_ms": [round(s / 16 * 1000, 1) for s in step],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _tile_ops(net: Any, pixels: Any, mask: Any, top: int = 5) -> dict[str, float]:
    """Where one tile's vision time goes: the operators that take the most of it, in ms."""
    import torch

    with torch.profiler.profile() as prof:
        net.model.get_image_features(pixels[None], mask[None])
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {e.key: round(e.self_cpu_time_total / 1000, 1) for e in rows}


def _compiled_vision(net: Any, pixels: Any, mask: Any, runs: int) -> dict[str, Any]:
    """``torch.compile`` of the vision tower (weights frozen into the graph, as inductor does
    for inference), tile by tile: its first call (the compile), the 13 tiles after it, and
    how far its features drift from eager ones."""
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = True
    eager_tower = net.model.vision_model
    eager = net.model.get_image_features(pixels[:1][None], mask[:1][None]).pooler_output[0]
    net.model.vision_model = torch.compile(eager_tower)
    try:
        first = _timed(lambda: net.model.get_image_features(pixels[:1][None], mask[:1][None]), 1)[0]
        drift = (net.model.get_image_features(pixels[:1][None], mask[:1][None]).pooler_output[0] - eager).abs().max()
        timed = _timed(lambda: [net.model.get_image_features(pixels[k:k + 1][None], mask[k:k + 1][None])
                                for k in range(pixels.shape[0])], runs)
    finally:
        net.model.vision_model = eager_tower
    return {"vision_compiled_first_call_s": first, "vision_compiled_tile_by_tile_s": timed,
            "vision_compiled_max_abs_drift": round(float(drift), 6)}


def _decode(net: Any, inputs: Any, steps: int) -> float:
    """Seconds for ``steps`` new tokens one at a time after the prompt (its prefill not counted)."""
    import torch

    out = net(**inputs, use_cache=True)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    length = inputs["input_ids"].shape[1]
    start = time.perf_counter()
    for i in range(steps):
        out = net(input_ids=token, past_key_values=cache, use_cache=True,
                  attention_mask=torch.ones(1, length + i + 1, dtype=torch.long))
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


def _timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(round(time.perf_counter() - start, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="256M", choices=["tiny", "256M", "500M"])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=2, help="repeats of each part (the spread)")
    p.add_argument("--quick", action="store_true", help="tiny model, 1 photo, 4 tokens, 1 run: a smoke run for CI")
    p.add_argument("--parts", choices=list(ENGINES.values()), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.images, args.max_new_tokens, args.runs = "tiny", 1, 4, 1
    model = throughput.model_dir(args.preset)
    if args.parts:
        print(json.dumps(parts(str(model), args.parts, args.runs)))
        return 0
    for row in photo_rows(args.preset, args.images, args.max_new_tokens):
        print(json.dumps({"preset": args.preset, "kind": "photo", **row}), flush=True)
    for engine, quantize in ENGINES.items():
        proc = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--runs", str(args.runs),
                               "--parts", quantize], capture_output=True, text=True, check=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        got["vision_tile_by_tile_median_s"] = statistics.median(got["vision_tile_by_tile_s"])
        print(json.dumps({"preset": args.preset, "kind": "parts", "engine": engine, **got}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
