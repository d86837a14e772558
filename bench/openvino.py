"""OpenVINO (optimum-intel) against this project's torch runtime, side by side, same run.

    python -m venv /tmp/ov && /tmp/ov/bin/pip install "optimum-intel[openvino]" "transformers==4.57.6" \\
        torch==2.14.1 torchvision==0.29.1 num2words
    .venv/bin/python bench/openvino.py --ov-python /tmp/ov/bin/python --images 2

optimum-intel's exporter needs transformers <= 4.57.6 and this project transformers >= 5, so
OpenVINO runs in an environment of its own (`--ov-python`). The preset model (random weights,
the published 256M shapes) is built here, exported there once (`optimum-cli export openvino
--task image-text-to-text`, fp32 weights), and its tokenizer config rewritten for transformers
4.57 (`tokenizer_class`, `extra_special_tokens`). Both engines then answer caption + tags + OCR
for the same seeded 1024x768 photos at each task's default image settings (caption and tags one
tile, OCR 13 tiles), exactly 64 new tokens each, greedy: OpenVINO with the stock
`OVModelForVisualCausalLM.generate`, one question at a time (it has no shared vision pass or
prefix); torch through `Runtime.generate`, which shares both. Prints one JSON line per engine
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
QUESTIONS = [  # (prompt, image splitting): the built-in tasks' defaults
    ("Describe this image in detail.", False),
    ("List keywords that describe this image, separated by commas.", False),
    ("Extract all text from this image. Keep the line breaks.", True)]

OV_PHASE = r"""
import json, sys, time
from PIL import Image
from transformers import AutoProcessor
from optimum.intel import OVModelForVisualCausalLM
ov_dir, proc_dir, tokens, questions = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
images = sys.argv[5:]
processor = AutoProcessor.from_pretrained(proc_dir)
model = OVModelForVisualCausalLM.from_pretrained(ov_dir)
def ask(img, prompt, split):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = processor(text=text, images=[img], return_tensors="pt", do_image_splitting=split)
    return model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
warm = Image.open(images[0]).convert("RGB")
ask(warm, "Hi", False)
start = time.perf_counter()
for path in images:
    img = Image.open(path).convert("RGB")
    for prompt, split in questions:
        ask(img, prompt, split)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def exported(ov_python: str, src: Path) -> tuple[Path, Path]:
    """The OpenVINO export of ``src`` and a processor folder transformers 4.57 reads."""
    dst, proc = src.with_name(src.name + "-openvino"), src.with_name(src.name + "-tf457")
    if not (dst / "openvino_language_model.xml").exists():
        subprocess.run([ov_python, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(src),
                        "--task", "image-text-to-text", str(dst)], check=True, capture_output=True)
    if not proc.exists():
        shutil.copytree(src, proc, ignore=shutil.ignore_patterns("*.safetensors"))
        cfg = json.loads((proc / "tokenizer_config.json").read_text())
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg["extra_special_tokens"] = {k: cfg[k] for k in ("fake_image_token", "global_image_token", "image_token",
                                                           "end_of_utterance_token", "video_token") if k in cfg}
        (proc / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst, proc


def torch_seconds(model: Path, images: list[Path], tokens: int) -> float:
    from PIL import Image

    from smolvlm_watch.config import ImageSettings, ModelConfig
    from smolvlm_watch.engine import GenerationSettings, Request, question
    from smolvlm_watch.runtime import Runtime

    runtime = Runtime(ModelConfig(path=model))
    runtime.load()
    gen = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, loop_guard=False)
    photos = [Image.open(p).convert("RGB") for p in images]
    runtime.generate([Request(images=(photos[0],), messages=question("Hi"), image=ImageSettings(splitting=False),
                              generation=GenerationSettings(max_new_tokens=2))])  # warm
    start = time.perf_counter()
    for photo in photos:  # one file at a time, as the daemon gets a photo: its three questions together
        runtime.generate([Request(images=(photo,), messages=question(q), image=ImageSettings(splitting=split),
                                  generation=gen) for q, split in QUESTIONS])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ov-python", required=True, help="python of an environment with optimum-intel[openvino]")
    p.add_argument("--preset", default="256M", choices=["tiny", "256M", "500M"])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args(argv)
    import throughput

    model = throughput.model_dir(args.preset)
    images = throughput.make_images(HERE / ".cache" / "ov-photos", args.images, throughput.PHOTO)
    ov_dir, proc_dir = exported(args.ov_python, model)
    ov = subprocess.run([args.ov_python, "-c", OV_PHASE, str(ov_dir), str(proc_dir), str(args.max_new_tokens),
                         json.dumps(QUESTIONS), *map(str, images)], check=True, capture_output=True, text=True)
    ov_s = json.loads(ov.stdout.strip().splitlines()[-1])["seconds"]
    torch_s = torch_seconds(model, images, args.max_new_tokens)
    n = len(images)
    for engine, seconds in (("openvino fp32 (stock generate, one question at a time)", ov_s),
                            ("torch, this project's Runtime (shared vision pass and prefix)", torch_s)):
        print(json.dumps({"engine": engine, "preset": args.preset, "images": n, "questions_per_image": 3,
                          "new_tokens": args.max_new_tokens, "seconds_per_image": round(seconds / n, 2),
                          "images_per_s": round(n / seconds, 4)}), flush=True)
    print(json.dumps({"ratio_openvino_over_torch": round(torch_s / ov_s, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
