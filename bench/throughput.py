"""Throughput of smolvlm-watch against the reference loop of the transformers SmolVLM docs.

    python bench/throughput.py --preset 256M --device cpu --images 4 --tasks caption,tags,ocr
    python bench/throughput.py --quick          # tiny model, CI smoke run
    python bench/throughput.py --quantize int8 --task-defaults   # one of bench/engines.py's rows
    python bench/throughput.py --mix 0.2 --isa avx2  # OCR's gate on a library where 20% of photos show text

Builds (and caches under bench/.cache) the preset model with random weights, writes a fixed
seeded set of images, then measures in ONE run, each phase in a fresh subprocess so peak memory is
its own: (a) the reference loop exactly as the docs write it, one image and one task at a time;
(b) smolvlm-watch's `process` path on the same files (decode, resize, infer, parse, write
sidecars). Both decode exactly max_new_tokens tokens (min_new_tokens = max_new_tokens, loop guard
off), at the processor's default image settings. Prints one JSON line per configuration.

``--mix F`` measures OCR's gate (``tasks.ocr.when: text-seen``) instead: a seeded library where a
fraction F of the photos carry text, caption + tags + OCR at the tasks' own image settings, run
once with ``when: always`` and once with ``text-seen``, and prints seconds per photo for each and
``mix_ratio`` (always over text-seen). With random weights the gate's answer is noise, so the
bench decides it from each photo's truth through ``tasks.GATE_ORACLE``, a hook for this bench
only (no config key reaches it): it measures the mechanism's cost, not the model's judgement.
``--isa avx2`` caps oneDNN and ATen at AVX2 in every phase (an N100/J4125-class NAS CPU) and the
rows say which ISA ran.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PHOTO, PAGE, CAMERA = (1024, 768), (2480, 3508), (6000, 4000)
PROMPTS = {
    "caption": "Describe this image in detail.",
    "tags": "List keywords that describe this image, separated by commas.",
    "ocr": "Extract all text from this image. Keep the line breaks.",
}


def make_images(folder: Path, count: int, size: tuple[int, int], seed: int = 1234,
                text_fraction: float | None = None) -> list[Path]:
    """Seeded photos; with ``text_fraction``, that share of them (exactly, rounded) carries text and
    is named ``bench-NNNN-text.jpg``, the others carry none."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with_text = set(rng.sample(range(count), round(count * text_fraction))) if text_fraction is not None else None
    paths = []
    for i in range(count):
        img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        text = with_text is None or i in with_text
        for _ in range(40):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            draw.rectangle((x, y, x + rng.randrange(20, 300), y + rng.randrange(10, 200)),
                           fill=tuple(rng.randrange(256) for _ in range(3)))
            if text:
                draw.text((x, y), f"line {rng.randrange(10_000)}", fill=(0, 0, 0))
        path = folder / f"bench-{i:04d}{'-text' if with_text is not None and text else ''}.jpg"
        img.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def model_dir(preset: str) -> Path:
    from smolvlm_watch.testing import build_model

    out = CACHE / preset
    if not (out / "config.json").exists():
        build_model(out, preset=preset)
    return out


def measured_peak_flops(device: str, dtype) -> float:
    """What a large GEMM reaches here: the roofline the fractions are quoted against."""
    import torch

    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        a @ b
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def flop_estimate(model, prompt_tokens: int, image_tiles: int, new_tokens: int) -> tuple[float, float]:
    """(vision, text) FLOP of one question: 2 × parameters × tokens per tower (attention's
    quadratic term left out)."""
    vision = sum(p.numel() for p in model.model.vision_model.parameters())
    text = sum(p.numel() for p in model.model.text_model.parameters())
    vcfg = model.config.vision_config
    patches = (vcfg.image_size // vcfg.patch_size) ** 2
    return 2 * vision * patches * image_tiles, 2 * text * (prompt_tokens + new_tokens)


def _dtype(device: str):
    import torch

    return torch.bfloat16 if device == "cuda" else torch.float32


def phase_reference(args, images: list[Path], tasks: list[str]) -> dict:
    """The transformers docs' loop: apply_chat_template + generate per image and per question."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=_dtype(args.device)).to(args.device)
    passes, prefill_tokens = [], 0
    model.model.vision_model.register_forward_hook(lambda *a: passes.append(1))
    vision_flop, text_flop, start = 0.0, 0.0, time.perf_counter()
    for path in images:
        for task in tasks:
            messages = [{"role": "user", "content": [{"type": "image", "path": str(path)},
                                                     {"type": "text", "text": PROMPTS[task]}]}]
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt").to(args.device)
            with torch.inference_mode():
                model.generate(**inputs, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                               do_sample=False)
            prefill_tokens += inputs["input_ids"].shape[1]
            v, t = flop_estimate(model, inputs["input_ids"].shape[1], inputs["pixel_values"].shape[1],
                                 args.max_new_tokens)
            vision_flop, text_flop = vision_flop + v, text_flop + t
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "vision_passes": len(passes), "prefill_tokens": prefill_tokens,
            "vision_flop": vision_flop, "text_flop": text_flop,
            **_peaks(args.device)}


def phase_ours(args, images: list[Path], tasks: list[str]) -> dict:
    """The same files through `process`'s code path: decode, resize, infer, parse, write sidecars."""
    from smolvlm_watch import config as configmod
    from smolvlm_watch.pipeline import FileJob, Pipeline
    from smolvlm_watch.plugins import Registry

    folder = images[0].parent
    tiles = {} if args.task_defaults else {"image_splitting": True}
    task_cfg = {t: {"max_new_tokens": args.max_new_tokens, "prompt": PROMPTS[t], **tiles,
                    "options": {"min_new_tokens": args.max_new_tokens, "loop_guard": False}} for t in tasks}
    if args.when and "ocr" in task_cfg:
        task_cfg["ocr"]["when"] = args.when
        from smolvlm_watch import tasks as tasks_module

        tasks_module.GATE_ORACLE = lambda media: media.info.path.endswith("-text.jpg")  # the photo's truth
    raw = {"model": {"path": args.model, "device": args.device, "dtype": args.dtype, "quantize": args.quantize},
           "tasks": task_cfg, "runtime": {"compile": args.compile, **({"max_batch": args.batch} if args.batch else {})},
           "watches": [{"path": str(folder), "tasks": tasks, "outputs": ["json"], "policy": "overwrite"}]}
    config = configmod.parse(raw, folder)
    registry = Registry(entrypoints=False)
    runtime = registry.engine(config)
    runtime.load()
    pipeline = Pipeline(config, registry, runtime)
    start = time.perf_counter()
    jobs = [FileJob(p, config.watches[0], True) for p in images]
    failed = [r for _, r in pipeline.process_many(jobs) if r.status != "done"]
    seconds = time.perf_counter() - start
    if failed:
        raise SystemExit(f"bench: {len(failed)} files failed: {failed[0].error}")
    return {"seconds": seconds, "vision_passes": runtime.vision_passes, "prefill_tokens": runtime.prefill_tokens,
            "batch": runtime.max_batch(), "isa": _isa(),
            "dtype": runtime.dtype, **_peaks(args.device)}


def _isa() -> str:
    """The instruction set ATen dispatches to in this process (avx2, avx512, ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability()).lower()


def latency(args, image: Path) -> dict:
    """Time from a file landing in a watched folder (after its settle time) to its sidecar, with
    the model loaded and the queue empty, against one inference of the same request."""
    import shutil
    import threading

    from smolvlm_watch.config import parse
    from smolvlm_watch.daemon import Daemon
    from smolvlm_watch.plugins import Registry

    with tempfile.TemporaryDirectory(prefix="smolvlm-latency-") as tmp:
        root = Path(tmp)
        (root / "inbox").mkdir()
        settle = 0.5
        raw = {"model": {"path": str(args.model), "device": args.device, "dtype": args.dtype},
               "tasks": {"caption": {"max_new_tokens": args.max_new_tokens,
                                     "options": {"min_new_tokens": args.max_new_tokens, "loop_guard": False}}},
               "watches": [{"path": "./inbox", "tasks": ["caption"], "outputs": ["json"], "settle_seconds": settle}],
               "state": {"db": "./state/journal.sqlite"}}
        config = parse(raw, root, root / "config.yaml")
        daemon = Daemon(root / "config.yaml", lambda: (config, Registry(entrypoints=False)))
        daemon.worker.start()
        thread = threading.Thread(target=daemon.supervisor.run, daemon=True)
        thread.start()
        try:
            warm = root / "inbox" / "warm.jpg"
            shutil.copy(image, warm)
            _wait_for(warm.with_name(warm.name + ".smolvlm.json"))
            start = time.perf_counter()
            daemon.pipeline.process(warm, config.watches[0], force=True)
            inference = time.perf_counter() - start
            target = root / "inbox" / "landed.jpg"
            shutil.copy(image, target)
            landed = time.perf_counter()
            _wait_for(target.with_name(target.name + ".smolvlm.json"))
            total = time.perf_counter() - landed
        finally:
            daemon.stop()
            thread.join(10)
            daemon.shutdown()
    return {"latency_s": round(total - settle, 3), "inference_s": round(inference, 3),
            "latency_overhead_s": round(total - settle - inference, 3), "settle_s": settle}


def _wait_for(path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {path} never appeared")
        time.sleep(0.01)


def _peaks(device: str) -> dict:
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_gpu_mb": round(gpu, 1)}


ISA_CAP = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def run_phase(args, phase: str, when: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--model", str(args.model), "--device", args.device,
           "--dtype", args.dtype,
           "--tasks", args.tasks, "--max-new-tokens", str(args.max_new_tokens), "--images-dir", str(args.images_dir)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.compile:
        cmd.append("--compile")
    if args.task_defaults:
        cmd.append("--task-defaults")
    if when:
        cmd += ["--when", when]
    cmd += ["--quantize", args.quantize]
    env = {**os.environ, **ISA_CAP.get(args.isa or "", {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="256M", choices=["tiny", "256M", "500M", "2.2B"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--tasks", default="caption,tags,ocr")
    p.add_argument("--size", default=None,
                   help="WxH (default: a 1024x768 photo; 'page' for 2480x3508; 'camera' for a 24 MP 6000x4000)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="runtime.max_batch (default: automatic)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="smolvlm-watch's model.dtype (the reference loop keeps the docs' default)")
    p.add_argument("--compile", action="store_true", help="runtime.compile: static KV cache + compiled decode step")
    p.add_argument("--quantize", default="none", choices=["none", "int8"], help="model.quantize")
    p.add_argument("--task-defaults", action="store_true",
                   help="each task's own image settings (caption and tags one tile) instead of 13 tiles for all")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 images, 8 tokens: a smoke run for CI")
    p.add_argument("--mix", type=float, default=None, metavar="F",
                   help="OCR's gate: the share of photos with text (e.g. 0.2); always against text-seen")
    p.add_argument("--isa", choices=["avx2"], default=None, help="cap the CPU instruction set in every phase")
    p.add_argument("--when", choices=["always", "text-seen"], help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["reference", "ours", "latency"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--images-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if args.phase:
        import torch

        torch.manual_seed(0)
        images = sorted(Path(args.images_dir).glob("bench-*.jpg"))
        phases = {"reference": phase_reference, "ours": phase_ours,
                  "latency": lambda a, imgs, _t: latency(a, imgs[0])}
        result = phases[args.phase](args, images, tasks)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.preset, args.images, args.max_new_tokens = "tiny", 2, 8
    if args.mix is not None:
        return mix(args, tasks)
    named = {"page": PAGE, "camera": CAMERA}
    size = named.get(args.size or "") or (tuple(map(int, args.size.split("x"))) if args.size else PHOTO)
    args.model = model_dir(args.preset)
    with tempfile.TemporaryDirectory(prefix="smolvlm-bench-") as tmp:
        args.images_dir = Path(tmp)
        images = make_images(args.images_dir, args.images, size)
        ref = run_phase(args, "reference")
        ours = run_phase(args, "ours")
        lat = run_phase(args, "latency")
    # The work our run did per image: its vision pass once, and the text model over the prompt
    # tokens it prefilled (a shared prefix once) plus every question's new tokens.
    decoded = len(images) * len(tasks) * args.max_new_tokens
    text_flop_per_token = ref["text_flop"] / (ref["prefill_tokens"] + decoded)
    flop_per_image = (ref["vision_flop"] / len(tasks)
                      + text_flop_per_token * (ours["prefill_tokens"] + decoded)) / len(images)
    import torch

    peak = measured_peak_flops(args.device, getattr(torch, ours["dtype"]))
    ips, ref_ips = len(images) / ours["seconds"], len(images) / ref["seconds"]
    print(json.dumps({
        "preset": args.preset, "device": args.device, "dtype": ours["dtype"], "tasks": tasks, "images": len(images),
        "size": f"{size[0]}x{size[1]}", "max_new_tokens": args.max_new_tokens, "batch": ours["batch"],
        "compile": args.compile, "quantize": args.quantize, "task_defaults": args.task_defaults,
        "images_per_s": round(ips, 4), "reference_images_per_s": round(ref_ips, 4), "ratio": round(ips / ref_ips, 3),
        "seconds_per_image_per_task": round(ours["seconds"] / len(images) / len(tasks), 3),
        "reference_seconds_per_image_per_task": round(ref["seconds"] / len(images) / len(tasks), 3),
        "vision_passes": ours["vision_passes"], "reference_vision_passes": ref["vision_passes"],
        "prefill_tokens": ours["prefill_tokens"], "reference_prefill_tokens": ref["prefill_tokens"],
        "peak_rss_mb": ours["peak_rss_mb"], "reference_peak_rss_mb": ref["peak_rss_mb"],
        "peak_gpu_mb": ours["peak_gpu_mb"], "flop_per_image": round(flop_per_image),
        "device_peak_flops": round(peak), "roofline_fraction": round(flop_per_image * ips / peak, 4),
        **lat,
    }))
    return 0


def mix(args, tasks: list[str]) -> int:
    """OCR's gate on a mixed library: the same photos and engine, ``when: always`` against
    ``text-seen``, in one run; each phase in its own subprocess."""
    if args.quick:
        args.images = 10
    args.task_defaults = True
    args.model = model_dir(args.preset)
    with tempfile.TemporaryDirectory(prefix="smolvlm-bench-") as tmp:
        args.images_dir = Path(tmp)
        images = make_images(args.images_dir, args.images, PHOTO, text_fraction=args.mix)
        always = run_phase(args, "ours", "always")
        gated = run_phase(args, "ours", "text-seen")
    n = len(images)
    print(json.dumps({
        "preset": args.preset, "device": args.device, "dtype": always["dtype"], "quantize": args.quantize,
        "isa": always["isa"], "isa_capped": args.isa, "tasks": tasks, "images": n, "mix": args.mix,
        "with_text": sum(p.name.endswith("-text.jpg") for p in images), "max_new_tokens": args.max_new_tokens,
        "always_seconds_per_photo": round(always["seconds"] / n, 3),
        "text_seen_seconds_per_photo": round(gated["seconds"] / n, 3),
        "mix_ratio": round(always["seconds"] / gated["seconds"], 3),
        "always_vision_passes": always["vision_passes"], "text_seen_vision_passes": gated["vision_passes"],
        "peak_rss_mb": max(always["peak_rss_mb"], gated["peak_rss_mb"]),
    }))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SMOLVLM_WATCH_LOAD_ENTRYPOINTS", "0")
    sys.exit(main())
