"""OpenVINO (optimum-intel) against this project's torch runtime, side by side, same run.

    python -m venv /tmp/ov && /tmp/ov/bin/pip install "optimum-intel[openvino]" "transformers==4.57.6" \\
        torch==2.14.1 torchvision==0.29.1 num2words
    .venv/bin/python bench/openvino.py --ov-python /tmp/ov/bin/python --images 2

optimum-intel's exporter needs transformers <= 4.57.6 and this project transformers >= 5, so
OpenVINO runs in an environment of its own (`--ov-python`). The preset model (random weights,
the published 256M shapes) is built here, exported there once per weight format (`optimum-cli
export openvino --task image-text-to-text --weight-format fp32|int8`), and its tokenizer config
rewritten for transformers 4.57 (`tokenizer_class`, `extra_special_tokens`). Both engines then
answer caption + tags + OCR for the same seeded 1024x768 photos at each task's default image
settings (caption and tags one tile, OCR 13 tiles), exactly 64 new tokens each, greedy: OpenVINO
with the stock `OVModelForVisualCausalLM.generate`, one question at a time (it has no shared
vision pass or prefix); torch through `Runtime.generate`, which shares both. Each OpenVINO row
also gives its parts: the vision embeddings alone on 13 tiles, one decoding step alone (ms per
token, from 17 against 1 new token), the prompt tokens of each question (whether the processor
took one tile for caption and tags), the precision OpenVINO's CPU plugin computes in (its
default is bf16 wherever the CPU has AVX512-BF16 or AMX, whatever the weights: "fp32" rows there
are bf16 arithmetic) and its peak RSS. `bench/engines.py` gives torch's parts.
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
import json, resource, sys, time
import openvino
from PIL import Image
from transformers import AutoProcessor
from optimum.intel import OVModelForVisualCausalLM
ov_dir, proc_dir, tokens, questions = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
images = sys.argv[5:]
processor = AutoProcessor.from_pretrained(proc_dir)
model = OVModelForVisualCausalLM.from_pretrained(ov_dir)
def inputs(img, prompt, split):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    return processor(text=text, images=[img], return_tensors="pt", do_image_splitting=split)
def ask(img, prompt, split, n=tokens):
    return model.generate(**inputs(img, prompt, split), max_new_tokens=n, min_new_tokens=n, do_sample=False)
def timed(fn):
    start = time.perf_counter(); fn(); return time.perf_counter() - start
warm = Image.open(images[0]).convert("RGB")
ask(warm, "Hi", False, 2)
seconds = sum(timed(lambda: [ask(img, p, s) for p, s in questions])
              for img in (Image.open(path).convert("RGB") for path in images))
ocr = inputs(warm, questions[-1][0], True)
vision = [round(timed(lambda: model.get_vision_embeddings(ocr["pixel_values"], ocr["input_ids"],
                                                          pixel_attention_mask=ocr["pixel_attention_mask"])), 3)
          for _ in range(2)]
one, many = (min(timed(lambda: ask(warm, questions[-1][0], True, n)) for _ in range(2)) for n in (1, 17))
print(json.dumps({"seconds": seconds, "prompt_tokens": [int(inputs(warm, p, s)["input_ids"].shape[1])
                                                        for p, s in questions],
                  "vision_13_tiles_s": vision, "decode_step_ms": round((many - one) / 16 * 1000, 1),
                  "inference_precision": openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def exported(ov_python: str, src: Path, weights: str) -> tuple[Path, Path]:
    """The OpenVINO export of ``src`` (``weights``: fp32, fp16 or int8) and a processor folder
    transformers 4.57 reads."""
    dst = src.with_name(src.name + "-openvino" + ("" if weights == "fp32" else f"-{weights}"))
    proc = src.with_name(src.name + "-tf457")
    if not (dst / "openvino_language_model.xml").exists():
        subprocess.run([ov_python, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(src),
                        "--task", "image-text-to-text", "--weight-format", weights, str(dst)],
                       check=True, capture_output=True)
    if not proc.exists():
        shutil.copytree(src, proc, ignore=shutil.ignore_patterns("*.safetensors"))
        cfg = json.loads((proc / "tokenizer_config.json").read_text())
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg["extra_special_tokens"] = {k: cfg[k] for k in ("fake_image_token", "global_image_token", "image_token",
                                                           "end_of_utterance_token", "video_token") if k in cfg}
        (proc / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst, proc


def torch_seconds(model: Path, images: list[Path], tokens: int) -> tuple[float, str]:
    """Seconds for the photos through the Runtime in the precision ``model.dtype: auto`` picks here."""
    from PIL import Image

    from smolvlm_watch.config import ImageSettings
    from smolvlm_watch.engine import GenerationSettings, Request, question
    from smolvlm_watch.runtime import Runtime, TransformersModel

    runtime = Runtime(TransformersModel(path=model))
    runtime.load()
    gen = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, loop_guard=False)
    photos = [Image.open(p).convert("RGB") for p in images]
    runtime.generate([Request(images=(photos[0],), messages=question("Hi"), image=ImageSettings(splitting=False),
                              generation=GenerationSettings(max_new_tokens=2))])  # warm
    start = time.perf_counter()
    for photo in photos:  # one file at a time, as the daemon gets a photo: its three questions together
        runtime.generate([Request(images=(photo,), messages=question(q), image=ImageSettings(splitting=split),
                                  generation=gen) for q, split in QUESTIONS])
    return time.perf_counter() - start, str(runtime.dtype)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ov-python", required=True, help="python of an environment with optimum-intel[openvino]")
    p.add_argument("--preset", default="256M", choices=["tiny", "256M", "500M"])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--weights", default="fp32,int8", help="OpenVINO weight formats to export and run, comma-separated")
    args = p.parse_args(argv)
    import throughput

    model = throughput.model_dir(args.preset)
    images = throughput.make_images(HERE / ".cache" / "ov-photos", args.images, throughput.PHOTO)
    n = len(images)
    rows = []
    for weights in args.weights.split(","):
        ov_dir, proc_dir = exported(args.ov_python, model, weights)
        ov = subprocess.run([args.ov_python, "-c", OV_PHASE, str(ov_dir), str(proc_dir), str(args.max_new_tokens),
                             json.dumps(QUESTIONS), *map(str, images)], check=True, capture_output=True, text=True)
        got = json.loads(ov.stdout.strip().splitlines()[-1])
        rows.append((f"openvino {weights} weights (stock generate, one question at a time)", got.pop("seconds"), got))
    seconds, dtype = torch_seconds(model, images, args.max_new_tokens)
    rows.append((f"torch {dtype}, this project's Runtime (shared vision pass and prefix)", seconds, {}))
    torch_s = rows[-1][1]
    for engine, seconds, extra in rows:
        print(json.dumps({"engine": engine, "preset": args.preset, "images": n, "questions_per_image": 3,
                          "new_tokens": args.max_new_tokens, "seconds_per_image": round(seconds / n, 2),
                          "images_per_s": round(n / seconds, 4), "ratio_over_torch": round(torch_s / seconds, 2),
                          **extra}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
