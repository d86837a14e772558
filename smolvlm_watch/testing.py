"""Offline SmolVLM models and sample media, built with the real transformers classes.

No weights can be downloaded where this project is developed and tested, so tests and benchmarks
run on models built here and saved with ``save_pretrained``; they load back through exactly the
same ``from_pretrained`` path a hub model takes. ``tiny-model`` is for tests (seconds to build,
meaningless text); ``--preset`` gives the published SmolVLM2 shapes with random weights, which
cost the same compute as the real models and so are what the benchmarks use.

    python -m smolvlm_watch.testing tiny-model DIR [--preset 256M|500M|2.2B]
    python -m smolvlm_watch.testing samples DIR [--count N]
    python -m smolvlm_watch.testing photos DIR
    python -m smolvlm_watch.testing demo DIR
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# SmolVLM2's chat template, as transformers' SmolVLM processing tests carry it. It has no video
# branch: for a video conversation SmolVLMProcessor.apply_chat_template swaps in its own.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    "<video>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# A few lines the BPE learns merges from; byte-level, so any text (Cyrillic, emoji) still encodes.
_CORPUS = [
    "User: Describe this image in detail. Assistant: A photo of a red car parked on a street.",
    "Extract all text from this image. Keep the line breaks.",
    "List keywords for this image, comma separated: cat, dog, tree, sky, beach, mountain.",
    "Frame from 00:01: You are provided the following series of frames from a video.",
    "Опиши это изображение. Извлеки весь текст. Кошка сидит на окне.",
    "How many people are in this image? There are two people.",
]

# Published SmolVLM2 shapes (text: Llama; vision: SigLIP), random weights.
PRESETS: dict[str, dict] = {
    "256M": dict(
        text=dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  intermediate_size=1536, vocab_size=49280, tie_word_embeddings=True),
        vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    image_size=512, patch_size=16),
        scale_factor=4, longest_edge=2048, max_image_size=512,
    ),
    "500M": dict(
        text=dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                  intermediate_size=2560, vocab_size=49280, tie_word_embeddings=True),
        vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    image_size=512, patch_size=16),
        scale_factor=4, longest_edge=2048, max_image_size=512,
    ),
    "2.2B": dict(
        text=dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=8192, vocab_size=49280, tie_word_embeddings=False),
        vision=dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
                    image_size=384, patch_size=14),
        scale_factor=3, longest_edge=1536, max_image_size=384,
    ),
    "tiny": dict(
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, tie_word_embeddings=False),
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=64, patch_size=8),
        scale_factor=4, longest_edge=256, max_image_size=64,
    ),
}


def build_tokenizer():
    """A byte-level BPE holding SmolVLM's special tokens, padded on the left as batching needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        padding_side="left",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(out_dir: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build a SmolVLM with the real classes and save processor + model with ``save_pretrained``."""
    import torch
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    spec = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    text = dict(spec["text"], model_type="llama")
    if preset == "tiny":
        text["vocab_size"] = len(tokenizer)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("bos", "<|im_start|>"), ("eos", "<end_of_utterance>"), ("pad", "<|im_end|>"))}
    text.update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    config = SmolVLMConfig(
        text_config=text,
        vision_config=dict(spec["vision"]),
        scale_factor=spec["scale_factor"],
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config).eval()
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = ids["bos"], ids["eos"], ids["pad"]

    size = {"longest_edge": spec["longest_edge"]}
    tile = {"longest_edge": spec["max_image_size"]}
    image_processor = SmolVLMImageProcessor(size=size, max_image_size=tile)
    video_processor = SmolVLMVideoProcessor(
        size=tile, max_image_size=tile,
        video_sampling={"fps": 1, "max_frames": 64, "video_size": tile},
    )
    vcfg = spec["vision"]
    image_seq_len = int((vcfg["image_size"] // vcfg["patch_size"]) ** 2 / spec["scale_factor"] ** 2)
    processor = SmolVLMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    if preset != "tiny":
        model = model.to(torch.bfloat16)  # the published SmolVLM2 checkpoints are stored in bf16
    model.save_pretrained(out, safe_serialization=True)
    for saved in out.iterdir():  # readable by the service's user, as a model folder copied there would be
        saved.chmod(0o644)
    return out


def sample_images(out_dir: str | Path, count: int = 6, seed: int = 0) -> list[Path]:
    """Seeded sample photos in the formats users drop (JPEG, PNG, WebP), with shapes and text."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
    paths = []
    for i in range(count):
        w, h = rng.choice([(640, 480), (480, 640), (800, 600), (320, 320)])
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            box = (x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        draw.text((10, 10), f"Sample {i + 1}", fill=(0, 0, 0))
        ext, fmt = formats[i % len(formats)]
        path = out / f"sample-{i + 1:02d}.{ext}"
        img.save(path, fmt)
        paths.append(path)
    return paths


class ModelServer:
    """A real ``transformers serve`` of a model folder on 127.0.0.1, in a process of its own: what
    the remote backend is tested and measured against. ``home``: its HF_HOME; ``threads``: its
    OMP_NUM_THREADS. Use ``start``/``stop``, or as a context manager."""

    def __init__(self, model: Path, home: Path | None = None, dtype: str = "auto", threads: int | None = None):
        import socket

        self.model, self.home, self.dtype, self.threads = model, home, dtype, threads
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def executable() -> str | None:
        """The ``transformers`` command beside this Python (transformers[serving]), if installed."""
        import shutil

        return shutil.which("transformers", path=str(Path(sys.executable).parent))

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.update({"HF_HOME": str(self.home)} if self.home else {})
        env.update({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {})
        self.proc = subprocess.Popen([str(self.executable()), "serve", str(self.model), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--device", "cpu", "--dtype", self.dtype],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait()

    def wait(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve of {self.model} did not come up in {timeout:.0f} s")

    def stop(self) -> None:
        """uvicorn waits for the requests in flight; a stuck one must not outlive the caller."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class InstantServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that answers at once and keeps
    what it was sent (bodies, headers, sizes): for measuring and testing the remote backend's
    client alone, with no model behind it. Use as a context manager; ``url`` is its base URL.
    ``before_answer`` is called with each request as recorded, before it is answered (a test
    holds an answer back with it); ``keep_bodies`` False keeps only sizes (a benchmark's server).
    ``python -m smolvlm_watch.testing instant-server`` runs one in its own process."""

    def __init__(self, answer: str = "a quick answer", host: str = "127.0.0.1",
                 before_answer: Callable[[dict], None] | None = None, keep_bodies: bool = True,
                 port: int = 0):
        import http.server
        import json
        import threading

        server = self
        self.answer = answer
        self.requests: list[dict] = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "bytes": len(body),
                                            "json": json.loads(body or b"{}") if keep_bodies else None})
                    record = server.requests[-1]
                if before_answer is not None:
                    before_answer(record)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": server.answer}}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 3}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                payload = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="instant-server", daemon=True)

    def __enter__(self) -> InstantServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def demo(root: str | Path) -> int:
    """Build the tiny model, generate samples and process them: the offline first run."""
    from . import cli

    root = Path(root).resolve()
    model_dir = root / "tiny-model"
    if not (model_dir / "config.json").exists():
        print(f"building the tiny offline model in {model_dir} ...")
        build_model(model_dir)
    images = sample_images(root / "images")
    code = cli.main(["process", str(root / "images"), "--model", str(model_dir),
                     "--task", "caption", "--task", "tags", "--task", "ocr"])
    print("\nsidecars written (tiny random model: the text is meaningless, the pipeline is real):")
    for img in images:
        print(f"  {img.with_name(img.name + '.smolvlm.json')}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smolvlm_watch.testing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-model", help="build an offline SmolVLM (tiny, or a published shape)")
    p.add_argument("dir")
    p.add_argument("--preset", choices=[k for k in PRESETS if k != "tiny"], default=None)
    p.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("samples", help="write seeded sample images")
    s.add_argument("dir")
    s.add_argument("--count", type=int, default=6)
    ph = sub.add_parser("photos", help="write seeded field photos: 24 MP JPEG, HEIC, AVIF, DNG; with GPS and "
                        "capture times: JPEG, HEIC, MP4")
    ph.add_argument("dir")
    srv = sub.add_parser("instant-server", help="an OpenAI-compatible server that answers at once, until stdin "
                         "closes; prints its URL, then the size of each request as JSON")
    srv.add_argument("--port", type=int, default=0)
    d = sub.add_parser("demo", help="build the tiny model and process sample images")
    d.add_argument("dir")
    args = parser.parse_args(argv)
    if args.command == "tiny-model":
        out = build_model(args.dir, args.preset or "tiny", args.seed)
        print(out)
    elif args.command == "samples":
        for path in sample_images(args.dir, args.count):
            print(path)
    elif args.command == "photos":
        from . import fixtures

        for path in fixtures.photos(args.dir):
            print(path)
    elif args.command == "instant-server":
        instant_server(args.port)
    else:
        return demo(args.dir)
    return 0


def instant_server(port: int) -> None:
    """Serve in this process until stdin closes (the caller is done), then say what was sent."""
    import json

    with InstantServer(keep_bodies=False, port=port) as server:
        print(server.url, flush=True)
        sys.stdin.read()
    print(json.dumps({"bytes": [r["bytes"] for r in server.requests]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
