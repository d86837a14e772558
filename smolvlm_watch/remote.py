"""The remote backend: the same requests, answered by an OpenAI-compatible server.

vLLM, llama.cpp's server, Ollama and ``transformers serve`` all speak ``/v1/chat/completions``.
Each request becomes one chat completion with its images as ``data:`` URLs (a video as its
sampled frames, each after its ``Frame from MM:SS:`` line); several are in flight at once so the
server's continuous batching is used. 429, 5xx and connection errors are retried with backoff and
then reported as transient (the journal retries the file later); other 4xx errors are final.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from collections.abc import Sequence

import httpx
from PIL import Image

from .config import ImageSettings, ModelConfig, RuntimeConfig
from .engine import Answer, InferenceError, Interrupted, ModelInfo, ModelLoadError, Request

RETRIES = 6
BACKOFF_BASE = 1.0
BACKOFF_CAP = 10.0


def data_url(image: Image.Image) -> str:
    """PNG, lossless: the server sees exactly the pixels the in-process runtime would."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai(request: Request) -> list[dict[str, Any]]:
    """transformers-style messages (image/video placeholders) as OpenAI chat messages."""
    from .media.video import timestamp_label

    images = iter(request.images)
    out = []
    for message in request.messages:
        content = []
        for item in message["content"]:
            if item["type"] == "text":
                content.append({"type": "text", "text": item["text"]})
            elif item["type"] == "image":
                content.append({"type": "image_url", "image_url": {"url": data_url(next(images))}})
            elif item["type"] == "video":
                clip = request.video
                for t, frame in zip(clip.timestamps, clip.frames):
                    content.append({"type": "text", "text": f"Frame from {timestamp_label(t)}:"})
                    content.append({"type": "image_url", "image_url": {"url": data_url(frame)}})
        out.append({"role": message["role"], "content": content})
    return out


class RemoteRuntime:
    """Runtime over HTTP; same interface as ``runtime.Runtime`` as far as the pipeline uses it."""

    def __init__(self, model: ModelConfig, runtime: RuntimeConfig | None = None):
        if not model.base_url or not model.name:
            raise ModelLoadError("model.backend openai needs model.base_url and model.name")
        self.config = model
        self.base_url = model.base_url.rstrip("/")  # credentials in it stay with the client only
        self.endpoint = (model.endpoint or "").rstrip("/")
        self.device, self.dtype = "remote", None
        self.vision_passes = 0
        self.prepares_ahead = False  # nothing to prepare: the server resizes and tiles images itself
        self._client: httpx.Client | None = None
        self._pool = ThreadPoolExecutor(max_workers=model.concurrency, thread_name_prefix="remote")
        self._cancelled = threading.Event()

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def info(self) -> ModelInfo:
        return ModelInfo(id=self.config.name or "", revision=None, dtype=None, device=None, backend="openai",
                         endpoint=self.endpoint)

    def load(self) -> None:
        if self._client is not None:
            return
        headers = {}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise ModelLoadError(f"model.api_key_env names ${self.config.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
        url = httpx.URL(self.base_url)
        auth = httpx.BasicAuth(url.username, url.password) if url.username else None  # never in a logged URL
        self._client = httpx.Client(base_url=url.copy_with(username=None, password=None), headers=headers, auth=auth,
                                    timeout=self.config.timeout)

    def max_batch(self) -> int:
        return max(1, self.config.concurrency)

    def image_edge(self, settings: ImageSettings) -> int | None:
        return None  # the server resizes: the full image is sent

    def video_sampling(self) -> dict[str, Any]:
        return {"fps": 1, "max_frames": 64}

    def generate(self, requests: Sequence[Request]) -> list[Answer]:
        self.load()
        answers = list(self._pool.map(self._one, requests))
        if self._cancelled.is_set():
            raise Interrupted("the remote backend was stopped while answering")
        return answers

    def cancel(self) -> None:
        """No new request or retry starts; requests in flight end with their timeout."""
        self._cancelled.set()

    def preprocess(self, requests: Sequence[Request]) -> None:
        """Nothing to prepare ahead: the server resizes and tiles the images itself."""

    def _one(self, request: Request) -> Answer:
        body = {"model": self.config.name, "messages": to_openai(request),
                "max_tokens": request.generation.max_new_tokens, "temperature": 0.0, "stream": False}
        start = time.perf_counter()
        last = ""
        assert self._client is not None  # generate loads first
        for attempt in range(RETRIES):
            if self._cancelled.is_set():
                return Answer(text="", error=InferenceError("cancelled: the daemon is stopping"))
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:
                why = str(exc).replace(self.base_url, self.endpoint)
                last = f"cannot reach {self.endpoint}: {type(exc).__name__}: {why}"
            else:
                if response.status_code == 200:
                    return self._answer(response.json(), time.perf_counter() - start)
                detail = _detail(response)
                if response.status_code != 429 and response.status_code < 500:
                    return Answer(text="", error=InferenceError(
                        f"remote model {self.config.name!r} at {self.endpoint} refused the request "
                        f"(HTTP {response.status_code}): {detail}"))
                last = f"HTTP {response.status_code} from {self.endpoint}: {detail}"
            time.sleep(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.8, 1.2))
        return Answer(text="", error=InferenceError(f"remote backend unavailable after {RETRIES} tries: {last}"))

    @staticmethod
    def _answer(payload: dict[str, Any], seconds: float) -> Answer:
        choice = (payload.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        usage = payload.get("usage") or {}
        return Answer(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0), seconds=seconds,
                      new_tokens=int(usage.get("completion_tokens") or 0))


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        detail = data.get("detail") or data.get("error") or data
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
        return str(detail)[:300]
    return str(data)[:300]
