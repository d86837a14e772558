"""The one shared SmolVLM2: loaded once, lazily, and run on lists of requests.

Plugins say *what* to ask (a conversation, generation settings, image settings); this module
decides *how*: it groups requests that can share a forward pass, left-pads them into batches and
runs ``generate`` once per batch. Greedy decoding of a left-padded batch gives token-for-token the
same answers as one request at a time, so batching is invisible outside this module.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Any, Literal
from collections.abc import Sequence
from urllib.parse import urlparse

from PIL import Image

from . import logs
from .config import ImageSettings, ModelConfig, RuntimeConfig
from .settings import setting
from .batching import Cancelled, LoopGuard, batch_for_memory, image_ids, padded, plan, shared_prefixes, until_end
from .engine import (Answer, InferenceError, Interrupted, ModelInfo, ModelLoadError, Request, frame_edge)


GPU_TILES_PER_PASS = 64  # vision tower tiles per forward on a GPU (13 per 1024x768 photo)


@dataclass(frozen=True)
class TransformersModel(ModelConfig):
    """``model.backend: transformers``: SmolVLM2 in this process, and this backend's keys."""

    dtype: Literal["auto", "float32", "float16", "bfloat16"] = setting("auto")
    device: Literal["auto", "cpu", "cuda", "mps"] = setting("auto")
    quantize: Literal["auto", "none", "int8"] = setting("auto")  # int8 linear layers (CPU); auto: see placement
    attn_implementation: str | None = setting(None)
    local_files_only: bool = setting(False)
    threads: int | None = setting(None, minimum=1)

    def problems(self) -> list[str]:
        """int8 is torch's dynamic quantization: float32 weights in, CPU kernels only."""
        if self.quantize != "int8":
            return []
        problems = []
        if self.dtype not in ("auto", "float32"):
            problems.append(f"model.quantize: int8 quantizes float32 weights; set model.dtype: auto or float32 "
                            f"(not {self.dtype})")
        if self.device not in ("auto", "cpu"):
            problems.append(f"model.quantize: int8 runs on the CPU only (torch's dynamic quantization has no "
                            f"{self.device} kernels); on a GPU use model.quantize: none")
        return problems


@dataclass(frozen=True)
class Pixels:
    """One request's images as the vision tower takes them, and the prompt text standing for them."""

    pixel_values: Any  # (tiles, 3, H, W) in the model's dtype
    pixel_attention_mask: Any  # (tiles, H, W)
    replacements: tuple[str, ...]  # per image: its image tokens, as the processor writes them


# Requests per forward pass on a CPU. Measured on a NAS-class CPU (AVX2, int8, 256M preset,
# README "Performance"): a household's mix (camera JPEG, HEIC, video, scanned PDF) peaks ~0.5 GB
# lower at 2 than at 4, in less time; four photos take 4-7% longer. A 4 GB box needs the first.
CPU_BATCH = 2


class Runtime:
    """Owns the processor and model. Thread-safe to call, but meant for one worker thread."""

    def __init__(self, model: TransformersModel, runtime: RuntimeConfig | None = None):
        self.config = model
        self.runtime_config = runtime or RuntimeConfig()
        self._lock = threading.Lock()
        self.processor: Any = None  # transformers' SmolVLMProcessor, once loaded
        self.model: Any = None
        self.device: str | None = None
        self.dtype: str | None = None
        self.quantize: str | None = None
        self.vision_passes = 0  # images (or videos) the vision tower encoded
        self.prefill_tokens = 0  # prompt tokens the language model computed (a shared prefix counts once)
        self._pixels: dict[tuple, Pixels] = {}  # see pixels(): entries leave with their images
        self._pixels_lock = threading.Lock()
        self._gpu_batch: int | None = None
        self._cancelled = threading.Event()

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def info(self) -> ModelInfo:
        """Model identity for sidecars; device and dtype as resolved (before loading: as configured)."""
        if self.model is not None:
            device, dtype, quantize = self.device, self.dtype, self.quantize
        else:
            where = placement(self.config)
            device, dtype, quantize = where.device, where.dtype, where.quantize
        return ModelInfo(id=self.config.source, revision=self.config.revision, dtype=dtype, device=device,
                         backend="transformers", quantize=quantize)

    # --- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load processor and model once; later calls return at once."""
        with self._lock:
            if self.model is not None:
                return
            self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        logs.adopt_transformers()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        where = placement(self.config)
        device, dtype = where.device, where.dtype
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"model.device is 'cuda' but no CUDA device is available "
                                 f"(torch {torch.__version__}); set model.device: cpu or auto")
        kwargs: dict[str, Any] = dict(revision=self.config.revision, local_files_only=self.config.local_files_only,
                                      trust_remote_code=False)
        source = self.config.source
        try:
            if self.config.path is None and not self._hub_usable():
                raise ConnectionError("the Hugging Face Hub cannot be reached and the model is not in the local cache")
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            model = AutoModelForImageTextToText.from_pretrained(  # int8: from the checkpoint's own dtype
                source, dtype="auto" if where.quantize else getattr(torch, dtype), use_safetensors=True,
                attn_implementation=self.config.attn_implementation or default_attention(device), **kwargs)
        except Exception as exc:  # every failure becomes one actionable message
            raise ModelLoadError(self._explain_load_failure(source, exc)) from exc
        self.processor = processor
        self.model = model.to(device).eval()
        if where.quantize == "int8":
            self.model = int8_linear(self.model)
        self.device, self.dtype, self.quantize = device, dtype, where.quantize

    def _hub_usable(self, timeout: float = 3.0) -> bool:
        """The model is cached, or the hub answers a TCP connect: without this check an offline
        machine waits minutes on the hub client's retries before the same error."""
        from huggingface_hub import constants, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(self.config.id, "config.json", revision=self.config.revision), str):
            return True
        if constants.HF_HUB_OFFLINE or self.config.local_files_only:
            return False
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError:
            return False
        return True

    def _explain_load_failure(self, source: str, exc: Exception) -> str:
        local = self.config.path is not None
        first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else ""
        why = f"{type(exc).__name__}: {first_line}"
        if isinstance(exc, ImportError):  # transformers' requires_backends: e.g. torchvision, for the video processor
            return (f"cannot load model {source!r}: a library it needs is not installed ({why}). Fix: install it "
                    "into the Python environment smolvlm-watch runs in (torchvision: the build that matches torch)")
        if local and not os.path.isdir(source):
            why = "the folder does not exist"
        elif local:
            why = (f"the folder has no loadable model ({why}); it needs config.json, model.safetensors and the "
                   "processor files that save_pretrained writes")
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE", "yes")
        hint = ("point model.path at a local folder holding the model (download it once elsewhere with "
                f"`hf download {self.config.id} --local-dir DIR`, or build an offline test model "
                "with `python -m smolvlm_watch.testing tiny-model DIR`)")
        if not local and (offline or self.config.local_files_only):
            why = f"offline mode is on and the model is not in the local cache ({why})"
        return f"cannot load model {source!r}: {why}. Fix: {hint}."

    # --- inference -----------------------------------------------------------------------------

    def _image_kwargs(self, settings: ImageSettings) -> dict[str, Any]:
        s = settings.over(self.config.image)
        kwargs: dict[str, Any] = {}
        if s.longest_edge is not None:
            kwargs["size"] = {"longest_edge": s.longest_edge}
        if s.max_image_size is not None:
            kwargs["max_image_size"] = {"longest_edge": s.max_image_size}
        if s.splitting is not None:
            kwargs["do_image_splitting"] = s.splitting
        return kwargs

    def prompt(self, request: Request) -> str:
        return self.processor.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, requests: Sequence[Request]) -> dict[str, Any]:
        """Model inputs for requests sharing image settings: prompt ids left-padded into one batch
        and, for images, each request's ``Pixels`` (prepared once per image, see ``preprocess``)."""
        self.load()
        prompts = [self.prompt(r) for r in requests]
        if requests[0].video is not None:
            videos, metadata = zip(*(video_inputs(r.video) for r in requests))
            inputs = self.processor(text=prompts, videos=list(videos), video_metadata=list(metadata),
                                    do_sample_frames=False, padding=True, return_tensors="pt")
            # the frames then go through the vision tower as a photo's tiles do: once per clip for
            # all its tasks, one frame per pass on a CPU (all at once, 3 tasks x 64 frames, peaked
            # at 2.2 GB for a 10 s clip on the 256M preset)
            pixels = [Pixels(values.to(self.model.dtype), mask, ())
                      for values, mask in zip(inputs["pixel_values"], inputs["pixel_attention_mask"])]
            return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "pixels": pixels}
        if not any(r.images for r in requests):
            return dict(self.processor(text=prompts, padding=True, return_tensors="pt").to(self.device))
        pixels = [self.pixels(r.images, r.image, r.frames) for r in requests]
        texts, _ = self.processor.get_text_with_replacements(prompts, [t for p in pixels for t in p.replacements])
        tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"], "pixels": pixels}

    def pixels(self, images: Sequence[Image.Image], settings: ImageSettings, frames: bool = False) -> Pixels:
        """Images resized, tiled and normalised by the processor's image processor, with the image
        tokens that stand for them in a prompt. Kept while the images live, so the questions of
        every task about one photo share one preparation, and a prefetch thread can prepare it
        (``preprocess``) while the model is busy with earlier files. A video's ``frames`` are not
        upscaled past their own tiles (``engine.frame_edge``)."""
        settings = settings.over(self.config.image)
        if frames:
            tile = settings.max_image_size or self.processor.image_processor.max_image_size["longest_edge"]
            edge = frame_edge(images, self.image_edge(settings) or tile, tile)
            settings = replace(settings, longest_edge=edge)
        key = (image_ids(images), settings)
        with self._pixels_lock:
            found = self._pixels.get(key)
        if found is not None:
            return found
        out = self.processor.image_processor([list(images)], return_tensors="pt", return_row_col_info=True,
                                             **self._image_kwargs(settings))
        pixels = Pixels(pixel_values=out["pixel_values"][0].to(self.model.dtype),  # the vision tower casts so too
                        pixel_attention_mask=out["pixel_attention_mask"][0],
                        replacements=tuple(self.processor.replace_image_token(out, image_idx=i)
                                           for i in range(len(images))))
        with self._pixels_lock:
            self._pixels[key] = pixels
        for img in images:
            weakref.finalize(img, self._forget_pixels, key)
        return pixels

    def _forget_pixels(self, key: tuple) -> None:
        with self._pixels_lock:
            self._pixels.pop(key, None)

    @property
    def prepares_ahead(self) -> bool:
        """Whether ``preprocess`` is worth calling from the prefetch threads (``runtime.prepare_ahead``):
        by default only where the model runs on a GPU, whose worker would otherwise wait ~135 ms
        per 13-tile photo on the image processor. On a CPU the model already keeps every core
        busy, so preparing ahead saves no time and costs ~350 MB of peak memory (measured on the
        256M preset); there ``encode`` prepares them. Never before the model is loaded."""
        ahead = self.runtime_config.prepare_ahead
        return self.loaded and (ahead if ahead is not None else self.device != "cpu")

    def preprocess(self, requests: Sequence[Request]) -> None:
        """Prepare the pixels these requests will need, in the caller's thread. A failure is left
        for ``generate`` to report as that request's error."""
        for r in requests:
            if r.images and r.video is None:
                try:
                    self.pixels(r.images, r.image, r.frames)
                except Exception:  # noqa: BLE001 - reported where it matters, by generate
                    continue

    def image_edge(self, settings: ImageSettings) -> int | None:
        """The processor first resizes every image to ``longest_edge`` (then tiles it, or squares
        it to one tile). Decoding at that size changes what the model sees by less than a level
        of 255 on average; decoding at one tile's size would make the processor upscale and blur
        (measured: 4x the difference), for no time saved."""
        self.load()
        s = settings.over(self.config.image)
        return s.longest_edge or self.processor.image_processor.size["longest_edge"]

    def video_sampling(self) -> dict[str, Any]:
        """The loaded processor's own video sampling settings (fps, max_frames), and the longest
        edge it resizes every frame to first (frames need not be kept larger)."""
        self.load()
        video = self.processor.video_processor
        sampling = getattr(video, "video_sampling", None) or {}
        size = getattr(video, "size", None)
        edge = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        return {"fps": sampling.get("fps", 1), "max_frames": sampling.get("max_frames", 64), "edge": edge}

    def max_batch(self) -> int:
        """Requests per batch: ``runtime.max_batch``, else ``CPU_BATCH`` on a CPU and, on a GPU, as
        many as the free memory holds (see ``batch_for_memory``), measured once after loading."""
        if self.runtime_config.max_batch:
            return self.runtime_config.max_batch
        if self.device != "cuda":
            return CPU_BATCH
        if self._gpu_batch is None:
            import torch

            free, _ = torch.cuda.mem_get_info()
            self._gpu_batch = batch_for_memory(free, self.model.config.get_text_config(), self.model.dtype.itemsize)
        return self._gpu_batch

    def cancel(self) -> None:
        """Stop what runs now at its next token, and refuse further work: the daemon is stopping
        and a long answer must not hold it past its grace period. ``generate`` raises
        ``Interrupted`` instead of returning cut-short answers."""
        self._cancelled.set()

    def probe(self) -> str | None:
        return None  # in this process: never unreachable

    def generate(self, requests: Sequence[Request]) -> list[Answer]:
        """Answer every request; a request that fails gets an Answer with ``error``, never an
        exception, so one bad input cannot take its batch-mates down with it."""
        if not requests:
            return []
        self.load()
        answers: list[Answer | None] = [None] * len(requests)
        features: dict[tuple, Any] = {}  # per image set, for this call: a split group is still encoded once
        for batch in plan(requests, self.max_batch(), whole=self.device != "cuda"):
            if self._cancelled.is_set():
                raise Interrupted("the model was stopped before these requests were answered")
            for index, answer in zip(batch, self._run_batch([requests[i] for i in batch], features)):
                answers[index] = answer
        if self._cancelled.is_set():
            raise Interrupted("the model was stopped while answering")
        return [a for a in answers if a is not None]

    def _run_batch(self, batch: list[Request], features: dict[tuple, Any]) -> list[Answer]:
        try:
            return self._generate(batch, features)
        except Exception as exc:  # noqa: BLE001 - a failed batch is split to find the request to blame
            if len(batch) > 1:  # find out which request is to blame: run them one at a time
                return [a for r in batch for a in self._run_batch([r], features)]
            return [Answer(text="", error=_inference_error(exc))]

    def _image_features(self, keys: list[tuple], inputs, features: dict[tuple, Any]) -> list[Any]:
        """Each distinct image set (``keys``: one per request) through the vision tower and
        connector ONCE per generate call, the tiles of all of them together in passes of
        ``_tiles_per_pass`` tiles."""
        import torch

        todo: dict[tuple, Pixels] = {}
        for pixels, key in zip(inputs["pixels"], keys):
            if key not in features:
                todo.setdefault(key, pixels)
        if todo:
            real = [p.pixel_values.flatten(1).any(dim=1) for p in todo.values()]  # padding tiles are all 0
            values = torch.cat([p.pixel_values[r] for p, r in zip(todo.values(), real)]).to(self.device)
            masks = torch.cat([p.pixel_attention_mask[r] for p, r in zip(todo.values(), real)]).to(self.device)
            step = self._tiles_per_pass()
            out = torch.cat([self.model.model.get_image_features(
                values[k:k + step].unsqueeze(0), masks[k:k + step].unsqueeze(0), return_dict=True).pooler_output[0]
                for k in range(0, values.shape[0], step)])
            per_tile = out.shape[0] // values.shape[0]
            for key, part in zip(todo, out.split([int(r.sum()) * per_tile for r in real])):
                features[key] = part
            self.vision_passes += len(todo)
        return [features[key] for key in keys]

    def _tiles_per_pass(self) -> int:
        """On CPU one tile at a time: measured on the 256M preset (13 tiles) 22% faster and 420 MB
        less peak memory than all at once. On a GPU many tiles, of several images, per pass."""
        return GPU_TILES_PER_PASS if self.device == "cuda" else 1

    def _prefilled(self, batch: list[Request], inputs, features: dict[tuple, Any]) -> dict[str, Any]:
        """Run what requests share once, and hand ``generate`` a KV cache holding it.

        The images go through the vision tower once each, and the prompt text the requests about
        one image share (everything up to a task's own question, image tokens included) goes
        through the language model once: caption, tags and OCR of one photo cost one vision pass
        and one prefix, then only their own questions. Each row of the cache is its prefix
        (right-padded to the longest) followed by its own suffix (left-padded); the attention
        mask and the positions generate derives from it make the padding invisible."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        rows = [ids[i][mask[i].bool()].tolist() for i in range(len(batch))]
        keys = [(r.image, image_ids(r.video.frames if r.video is not None else r.images)) for r in batch]
        image_features = self._image_features(keys, inputs, features)
        shares = shared_prefixes(rows, keys, self.model.config.image_token_id)
        lengths = dict(shares)
        slot = {owner: k for k, owner in enumerate(sorted(lengths))}  # owner row -> its prefix row
        pad = self.processor.tokenizer.pad_token_id
        prefix_ids, prefix_mask = padded([rows[o][:lengths[o]] for o in slot], pad, left=False, device=self.device)
        out = self.model.model(input_ids=prefix_ids, attention_mask=prefix_mask,
                               mm_encoder_outputs={"image": BaseModelOutputWithPooling(
                                   pooler_output=[image_features[o] for o in slot])}, use_cache=True)
        cache = out.cache
        index = torch.tensor([slot[owner] for owner, _ in shares], device=self.device)
        for layer in cache.layers:
            layer.batch_select_indices(index)
        suffix_ids, suffix_mask = padded([row[n:] for row, (_, n) in zip(rows, shares)], pad, left=True,
                                          device=self.device)
        self.prefill_tokens += sum(lengths.values()) + int(suffix_mask.sum())
        return {"input_ids": torch.cat([prefix_ids[index], suffix_ids], dim=1),
                "attention_mask": torch.cat([prefix_mask[index], suffix_mask], dim=1),
                "cache": cache}

    def _compiled_decoding(self, model_inputs: dict[str, Any], length: int) -> dict[str, Any]:
        """``runtime.compile``: decode into a static KV cache, whose fixed shapes let generate
        compile the decode step (with CUDA graphs on a GPU). A shared prefix already computed is
        copied in. The cache length is rounded up to a multiple of 256 so that batches of similar
        prompts reuse one compiled graph instead of compiling their own."""
        from transformers import CompileConfig, StaticCache

        compile_config = CompileConfig()
        compile_config._compile_all_devices = self.device != "cuda"  # asked for: compile on CPU too
        prefix = model_inputs.get("cache")
        if prefix is None:
            return {"cache_implementation": "static", "compile_config": compile_config}
        static = StaticCache(config=self.model.config, max_cache_len=-(-length // 256) * 256)
        for i, layer in enumerate(prefix.layers):
            static.update(layer.keys, layer.values, i)
        model_inputs["cache"] = static
        return {"compile_config": compile_config}

    def _generate(self, batch: list[Request], features: dict[tuple, Any]) -> list[Answer]:
        import torch
        from transformers import StoppingCriteriaList

        start = time.perf_counter()
        inputs = self.encode(batch)
        with torch.inference_mode():
            if "pixels" in inputs:
                model_inputs = self._prefilled(batch, inputs, features)
            else:
                self.prefill_tokens += int(inputs["attention_mask"].sum())
                model_inputs = dict(inputs)
            prompt_len = model_inputs["input_ids"].shape[1]
            gen = batch[0].generation
            kwargs: dict[str, Any] = dict(max_new_tokens=max(r.generation.max_new_tokens for r in batch),
                                          do_sample=False)
            if gen.min_new_tokens:
                kwargs["min_new_tokens"] = gen.min_new_tokens
            criteria: list[Any] = [Cancelled(self._cancelled)]
            if gen.loop_guard:
                criteria.append(LoopGuard(prompt_len))
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
            if self.runtime_config.compile:
                kwargs.update(self._compiled_decoding(model_inputs, prompt_len + kwargs["max_new_tokens"]))
            out = self.model.generate(**model_inputs, **kwargs)
        seconds = (time.perf_counter() - start) / len(batch)
        tokenizer = self.processor.tokenizer
        special = {tokenizer.pad_token_id, tokenizer.eos_token_id}
        answers = []
        rows = out[:, prompt_len:].tolist()
        for request, row, mask in zip(batch, rows, model_inputs["attention_mask"].sum(dim=1).tolist()):
            ids = tuple(until_end(row[:request.generation.max_new_tokens], special))
            text = tokenizer.decode(list(ids), skip_special_tokens=True)
            answers.append(Answer(text=text, token_ids=ids, prompt_tokens=int(mask), seconds=seconds,
                                  new_tokens=len(ids)))
        return answers


def video_inputs(clip):
    """Frames as one array plus the VideoMetadata SmolVLM's processor builds its prompt from
    (intro line with the duration, one 'Frame from MM:SS:' block per frame)."""
    import numpy as np
    from transformers.video_utils import VideoMetadata

    fps = clip.fps or 1.0
    frames = np.stack([np.asarray(f.convert("RGB").resize(clip.frames[0].size)) for f in clip.frames])
    meta = VideoMetadata(total_num_frames=clip.total_frames, fps=fps, duration=clip.duration,
                         width=clip.width, height=clip.height, video_backend="pyav",
                         frames_indices=[int(round(t * fps)) for t in clip.timestamps])
    return frames, meta


def default_attention(device: str) -> str:
    """flash-attention 2 on a GPU where the ``flash_attn`` package is installed, else PyTorch's
    SDPA (which picks its own flash/memory-efficient kernels on a GPU)."""
    import importlib.util

    return "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


@dataclass(frozen=True)
class Placement:
    """Where the model runs, in which precision, and why (what ``doctor`` reports)."""

    device: str
    dtype: str
    why: str
    quantize: str | None = None  # int8: the linear layers' weights (the CPU only)


def placement(config: TransformersModel) -> Placement:
    """``model.device``, ``model.dtype`` and ``model.quantize`` resolved: ``auto`` is a visible
    GPU, else the CPU, in the precision that device computes fastest: on a CPU without native
    bf16 that is int8 linear layers (``quantize: auto`` with ``dtype: auto``), measured faster than
    float32 there and about half its memory, which keeps a 4 GB NAS out of the OOM killer."""
    import torch

    if config.device != "auto":
        device, why = config.device, "model.device says so"
    elif torch.cuda.is_available():
        device, why = "cuda", "a CUDA device is visible"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device, why = "mps", "an Apple GPU is visible"
    else:
        device, why = "cpu", "no GPU is visible"
    if config.quantize == "int8":
        if device == "cpu":
            return Placement(device, "float32", f"{why}; model.quantize int8: int8 linear layers over float32",
                             "int8")
        why += "; model.quantize int8 is ignored on a GPU (CPU kernels only)"
    elif config.quantize == "auto" and device == "cpu" and config.dtype == "auto" and not cpu_has_bf16() \
            and int8_available():
        return Placement(device, "float32", f"{why}; this CPU has no native bf16 (AVX512-BF16 or AMX), so int8 "
                                            "linear layers over float32 (model.quantize: auto)", "int8")
    if config.dtype != "auto":
        return Placement(device, config.dtype, f"{why}; model.dtype says {config.dtype}")
    if device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return Placement(device, dtype, f"{why}; {dtype} is its fastest precision")
    if device == "mps":
        return Placement(device, "float16", f"{why}; float16 is its fastest precision")
    if cpu_has_bf16():
        return Placement(device, "bfloat16", f"{why}; this CPU has native bf16 (AVX512-BF16 or AMX)")
    return Placement(device, "float32", f"{why}; this CPU has no native bf16 (AVX512-BF16 or AMX), "
                                        "so float32 is faster")


def int8_available() -> bool:
    """Whether this torch still has the dynamic quantization ``int8_linear`` uses (deprecated)."""
    import torch

    dynamic = getattr(getattr(torch.ao.nn, "quantized", None), "dynamic", None)
    quantization = getattr(torch.ao, "quantization", None)
    return dynamic is not None and quantization is not None and hasattr(quantization, "default_dynamic_qconfig")


def int8_linear(model: Any) -> Any:
    """Every linear layer of both towers with int8 weights, its input quantized per call (torch's
    dynamic quantization), the rest in float32. ``model`` comes in its checkpoint's dtype (bf16
    for the published SmolVLM2), and each layer passes through float32 only on its way to int8,
    so the whole model is never held in float32: the load peaks ~0.5 GB lower for the 256M model.
    Measured on the 256M preset on a CPU without native bf16: the vision tower 1.5x and each
    decoding step 1.8x faster than float32. torch marks this API deprecated in favour of
    torchao, whose CPU path was far slower here (README, Performance); it is used while torch
    has it."""
    import gc

    import torch

    if not int8_available():
        raise ModelLoadError(f"model.quantize: int8 needs torch's dynamic quantization (torch.ao.quantization), "
                             f"which torch {torch.__version__} no longer has; set model.quantize: none")
    dynamic, quantization = torch.ao.nn.quantized.dynamic, torch.ao.quantization

    def int8(linear: Any) -> Any:  # its float32 copy lives only in here
        linear = linear.float()
        linear.qconfig = quantization.default_dynamic_qconfig
        return dynamic.Linear.from_float(linear)

    parents = [m for m in model.modules() if any(type(c) is torch.nn.Linear for c in m.children())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, once per layer
        for parent in parents:  # (this list holds no linear layer, so each is freed once replaced)
            for name in [n for n, c in parent.named_children() if type(c) is torch.nn.Linear]:
                setattr(parent, name, int8(getattr(parent, name)))
    del parents
    model.float()  # what is left: embeddings, norms, the patch convolution
    gc.collect()
    _give_back_freed_memory()
    return model


def _give_back_freed_memory() -> None:
    """glibc keeps freed heap pages; ``malloc_trim`` returns them (as Dask does after a task):
    here ~0.8 GB of float32 copies a long-running daemon would otherwise carry for months."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass


# oneDNN's ISA caps below native bf16 (ONEDNN_MAX_CPU_ISA), and ATen's (ATEN_CPU_CAPABILITY)
_NO_BF16_ISA = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_NO_BF16_ATEN = {"default", "avx2", "avx512"}


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX) that torch may use: there bf16 is the
    faster CPU dtype (measured 2.3x on a 2-core AMD EPYC with the 256M preset); elsewhere, or
    where oneDNN or ATen are capped below them, float32 is (and int8 faster still)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISA or \
            os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in _NO_BF16_ATEN:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _inference_error(exc: Exception) -> InferenceError:
    text = f"{type(exc).__name__}: {exc}".strip()
    return InferenceError(f"inference failed: {text.splitlines()[0]}")
