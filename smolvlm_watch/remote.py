"""The remote backend: the same requests, answered by an OpenAI-compatible server.

vLLM, llama.cpp's server, Ollama and ``transformers serve`` all speak ``/v1/chat/completions``.
Each request becomes one chat completion with its images as ``data:`` URLs (a video as its
sampled frames, each after its ``Frame from MM:SS:`` line); several are in flight at once so the
server's continuous batching is used. 429, 5xx, timeouts and connection errors are retried a
few times (a 429's ``Retry-After`` honoured), then the batch raises ``Unreachable``: the worker
gives its files back uncharged and pauses until ``probe`` gets an answer (an outage pauses the
queue, it does not punish the files). Other 4xx errors fail their own request, and so does an
answer that cannot be used (not JSON, no text, larger than the request can need): one bad
answer never fails its neighbours. Each try has a total deadline (``model.timeout``), not only
httpx's per-read one, and the credentials sent are redacted from every error recorded.

What is sent is what the model will look at: SmolVLM's processor first resizes every image so
its longest edge is ``longest_edge`` (2048), so the client does exactly that resize (same
rounding, torchvision's Lanczos as transformers 5's processor runs it) and the server's is a
no-op; a 24 MP photo goes out as ~0.6 MB of JPEG (quality 95, no chroma subsampling), not 39 MB
of PNG, and a JPEG already within the size as its own stream without its metadata. Each image is
prepared once per file, in the prefetch threads, and every question about it reuses the same URL
(identical bytes also let vLLM's prefix cache reuse the image's KV cache); those threads also
send the questions, so the server answers the next files while earlier answers are read.
Per-task image settings reach a vLLM server as ``mm_processor_kwargs``; any other server applies
its own, and the answer says so, so the sidecar records what was really applied.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
from dataclasses import dataclass, replace
from functools import partial
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image

from .config import ImageSettings, ModelConfig, RuntimeConfig
from .settings import setting
from .media.image import AS_IS
from .engine import Answer, InferenceError, Interrupted, ModelInfo, ModelLoadError, Request, Unreachable, frame_edge

RETRIES = 3  # tries of one request (a blip); a longer outage pauses the queue instead
BACKOFF_BASE = 1.0
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 30.0  # a longer Retry-After pauses the queue rather than holding the request
BODY_BASE = 64 * 1024  # bytes of an answer beyond what its tokens can need: JSON, usage, ids
BODY_PER_TOKEN = 256  # a generous ceiling per requested token, escapes and all
LONGEST_EDGE = 2048  # SmolVLM2's processor default (size.longest_edge), unless the config sets one
TILE = 512  # SmolVLM2's tile (max_image_size.longest_edge), unless the config sets one
JPEG_QUALITY = 95


def fitted(image: Image.Image, edge: int) -> Image.Image:
    """``image`` resized as SmolVLM's processor resizes it first, when it is larger: longest edge
    ``edge``, the other side rounded down and then up to even, torchvision's Lanczos on the uint8
    pixels (transformers 5's processor on CPU), so the server's own resize is a no-op and the
    pixels are the ones the in-process engine sees. A smaller image is sent as it is and the
    server scales it up exactly as it would in-process."""
    width, height = image.size
    if max(width, height) <= edge:
        return image
    if width >= height:
        new = (edge, int(edge / (width / height)))
        new = (new[0], new[1] + new[1] % 2)
    else:
        new = (int(edge * (width / height)), edge)
        new = (new[0] + new[0] % 2, new[1])
    import numpy as np
    import torch
    from torchvision.transforms.v2 import functional as tvf

    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    out = tvf.resize(pixels, [new[1], new[0]], interpolation=tvf.InterpolationMode.LANCZOS, antialias=True)
    return Image.fromarray(out.permute(1, 2, 0).numpy())


def data_url(image: Image.Image, fmt: str = "jpeg") -> str:
    """JPEG at quality 95 without chroma subsampling (``fmt`` "jpeg"), or lossless PNG; a JPEG
    file's own stream when the image is that file's pixels as they are (``media.image.AS_IS``)."""
    stream = image.info.get(AS_IS)
    if stream is not None:
        return "data:image/jpeg;base64," + base64.b64encode(stream).decode("ascii")
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG")
    else:
        image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Ahead:
    """What was done ahead for the images of files still to run, by image: each image's data URL
    (encoded once, however many questions and threads ask) and the requests already sent about
    it. Keyed by the image object, which is kept alive with its entries so its id cannot be
    reused; ``forget`` drops an image's entries once its file has run."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self._urls: dict[int, tuple[Image.Image, str]] = {}
        self._sent: dict[str, tuple[tuple[int, ...], Future[Answer]]] = {}
        self._lock = threading.Lock()

    def url(self, image: Image.Image, edge: int) -> str:
        key = id(image)
        with self._lock:
            hit = self._urls.get(key)
        if hit is not None and hit[0] is image:
            return hit[1]
        url = data_url(fitted(image, edge), self.fmt)
        with self._lock:
            self._urls[key] = (image, url)
        return url

    def send(self, key: str, images: Sequence[Image.Image], start: Callable[[], Future[Answer]]) -> None:
        """Start a request now (``start``) unless one with this key is already out."""
        with self._lock:
            if key not in self._sent:
                self._sent[key] = (tuple(id(i) for i in images), start())

    def take(self, key: str) -> Future[Answer] | None:
        with self._lock:
            hit = self._sent.pop(key, None)
        return hit[1] if hit else None

    def forget(self, images: Sequence[Image.Image]) -> None:
        gone = {id(i) for i in images}
        with self._lock:
            for i in gone:
                self._urls.pop(i, None)
            for key in [k for k, (ids, _) in self._sent.items() if gone.intersection(ids)]:
                del self._sent[key]


def to_openai(request: Request, url: Any = None) -> list[dict[str, Any]]:
    """transformers-style messages (image/video placeholders) as OpenAI chat messages; ``url``
    makes an image's data URL (default: PNG of the image as it is)."""
    from .media.video import timestamp_label

    url = url or data_url
    images = iter(request.images)
    out = []
    for message in request.messages:
        content = []
        for item in message["content"]:
            if item["type"] == "text":
                content.append({"type": "text", "text": item["text"]})
            elif item["type"] == "image":
                content.append({"type": "image_url", "image_url": {"url": url(next(images))}})
            elif item["type"] == "video":
                clip = request.video
                for t, frame in zip(clip.timestamps, clip.frames):
                    content.append({"type": "text", "text": f"Frame from {timestamp_label(t)}:"})
                    content.append({"type": "image_url", "image_url": {"url": url(frame)}})
        out.append({"role": message["role"], "content": content})
    return out


def _images(request: Request) -> list[Image.Image]:
    return list(request.images) + (list(request.video.frames) if request.video is not None else [])


def redact_url(url: str) -> str:
    """A URL with its credentials (``user:password@``) and query removed: ``base_url`` may carry
    them, and nothing that is logged, printed or written to a sidecar ever does."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _named(v: Any) -> bool:
    return isinstance(v, str) and v != ""


@dataclass(frozen=True)
class RemoteModel(ModelConfig):
    """``model.backend: openai``: the model on an OpenAI-compatible server, and this backend's keys."""

    base_url: str | None = setting(None, check=lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
                                   expect="an http(s) URL", shown=redact_url)  # http://host:port/v1
    name: str | None = setting(None, check=_named, expect="the endpoint's model name")
    api_key_env: str | None = setting(None, check=_named, expect="an environment variable name")  # holds the key
    timeout: float = setting(120.0, minimum=1)  # seconds per request, in all
    concurrency: int = setting(8, minimum=1)  # requests in flight
    image_format: Literal["jpeg", "png"] = setting("jpeg")  # jpeg (quality 95, 4:4:4) or png (lossless)
    server: Literal["auto", "vllm", "generic"] = setting("auto")  # vllm takes per-request processor options

    @property
    def source(self) -> str:
        """The model as logs, status and sidecars name it: with its URL, without credentials."""
        return f"{self.name} at {self.endpoint}"

    @property
    def endpoint(self) -> str | None:
        """``base_url`` as it may be shown or recorded: without user:password or a query."""
        return redact_url(self.base_url) if self.base_url else None

    def unapplied(self, image: ImageSettings) -> str | None:
        if self.server == "vllm" or (image.splitting is None and image.max_image_size is None):
            return None
        if self.server == "generic":
            return "this server"
        return "the server, unless it is vLLM (model.server: auto asks it),"

    def problems(self) -> list[str]:
        """What this backend cannot run without."""
        return [f"model.{key}: missing: model.backend openai needs base_url and name"
                for key in ("base_url", "name") if not getattr(self, key)]


class RemoteRuntime:
    """Runtime over HTTP; same interface as ``runtime.Runtime`` as far as the pipeline uses it."""

    def __init__(self, model: RemoteModel, runtime: RuntimeConfig | None = None):
        if not model.base_url or not model.name:
            raise ModelLoadError("model.backend openai needs model.base_url and model.name")
        self.config = model
        self.base_url = model.base_url.rstrip("/")  # credentials in it stay with the client only
        self.endpoint = (model.endpoint or "").rstrip("/")
        self.device, self.dtype = "remote", None
        self.vision_passes = 0
        self.prepares_ahead = True  # images are resized and encoded in the prefetch threads
        self.server: str = model.server  # "auto" until load() asks the server
        self._ahead = Ahead(model.image_format)
        self._client: httpx.Client | None = None
        self._pool = ThreadPoolExecutor(max_workers=model.concurrency, thread_name_prefix="remote")
        self._cancelled = threading.Event()
        self._loading = threading.Lock()
        self._secrets: list[str] = []  # what ``_redact`` keeps out of every message

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def info(self) -> ModelInfo:
        return ModelInfo(id=self.config.name or "", revision=None, dtype=None, device=None, backend="openai",
                         endpoint=self.endpoint)

    def load(self) -> None:
        with self._loading:  # the prefetch threads may load first (``preprocess``)
            if self._client is None:
                self._load()

    def _load(self) -> None:
        headers = {}
        url = httpx.URL(self.base_url)
        self._secrets = [x for x in (url.password, url.username and f"{url.username}:{url.password}") if x]
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise ModelLoadError(f"model.api_key_env names ${self.config.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
            self._secrets.append(key)
        auth = httpx.BasicAuth(url.username, url.password) if url.username else None  # never in a logged URL
        n = self.config.concurrency
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        # keep-alive connections; HTTP/2 (one connection, requests multiplexed) where a TLS server offers it
        self._client = httpx.Client(base_url=url.copy_with(username=None, password=None), headers=headers, auth=auth,
                                    timeout=self.config.timeout, limits=limits, http2=True)
        if self.server == "auto":
            self.server = self._detect()

    def _detect(self) -> str:
        """vLLM answers ``GET /version`` (beside ``/v1``) with its version; nothing else here does."""
        assert self._client is not None
        root = str(self._client.base_url).rstrip("/").removesuffix("/v1")
        try:
            response = self._client.get(root + "/version", timeout=5)
            return "vllm" if response.status_code == 200 and "version" in response.json() else "generic"
        except (httpx.HTTPError, ValueError):
            return "generic"

    def max_batch(self) -> int:
        return max(1, self.config.concurrency)

    def image_edge(self, settings: ImageSettings) -> int | None:
        """The longest edge sent: the processor's first resize, done here instead."""
        return settings.over(self.config.image).longest_edge or LONGEST_EDGE

    def applied(self, settings: ImageSettings) -> dict[str, Any] | None:
        """What the server will apply when it is not what was asked: a server that takes no
        per-request processor options uses its own tiling (None: its default)."""
        s = settings.over(self.config.image)
        if self.server == "vllm" or (s.max_image_size is None and s.splitting is None):
            return None  # applied as asked
        return ImageSettings(longest_edge=self.image_edge(settings)).as_dict()

    def video_sampling(self) -> dict[str, Any]:
        return {"fps": 1, "max_frames": 64, "edge": LONGEST_EDGE}  # frames are sent no larger

    def generate(self, requests: Sequence[Request]) -> list[Answer]:
        """Each request's answer: the one already asked for in ``preprocess``, or asked now."""
        self.load()
        futures = [self._ahead.take(self._key(r)) or self._pool.submit(self._one, r) for r in requests]
        try:
            answers = [f.result() for f in futures]
        finally:
            self._ahead.forget([img for r in requests for img in _images(r)])
        if self._cancelled.is_set():
            raise Interrupted("the remote backend was stopped while answering")
        outage = next((a.error for a in answers if isinstance(a.error, _Outage)), None)
        if outage is not None:
            raise Unreachable(str(outage), outage.retry_after)
        return answers

    def cancel(self) -> None:
        """No new request or retry starts; requests in flight end with their timeout."""
        self._cancelled.set()

    def preprocess(self, requests: Sequence[Request]) -> None:
        """Resize and encode every image ahead, in the prefetch thread calling this, and once the
        backend is loaded send the requests too: the server answers the next files while earlier
        answers are read, and ``generate`` finds them waiting (at most ``model.concurrency`` in
        flight, the pool's size)."""
        send = self._loads()
        for request in requests:
            edge = self.image_edge(request.image) or LONGEST_EDGE
            for image in _images(request):
                self._ahead.url(image, edge)
            if send and not self._cancelled.is_set():
                self._ahead.send(self._key(request), _images(request), partial(self._pool.submit, self._one, request))

    def _loads(self) -> bool:
        """Whether the backend is loaded, loading it if need be (a load that fails here is left
        for ``generate`` to report)."""
        try:
            self.load()
        except ModelLoadError:
            return False
        return True

    def _key(self, request: Request) -> str:
        """The request's body with each image named by its identity: equal for the same question
        about the same decoded image, built again by ``generate``."""
        return json.dumps(self._body(request, lambda img: f"#{id(img)}"), sort_keys=True)

    def _body(self, request: Request, url: Callable[[Image.Image], str] | None = None) -> dict[str, Any]:
        edge = self.image_edge(request.image) or LONGEST_EDGE
        body: dict[str, Any] = {"model": self.config.name,
                                "messages": to_openai(request, url or (lambda img: self._ahead.url(img, edge))),
                                "max_tokens": request.generation.max_new_tokens, "temperature": 0.0, "stream": False}
        kwargs = self._processor_kwargs(request)
        if kwargs:
            body["mm_processor_kwargs"] = kwargs
        return body

    def _processor_kwargs(self, request: Request) -> dict[str, Any]:
        """vLLM passes these to the model's HF processor, per request (a video's frames at their
        own tiles, ``Request.frames``; another server scales them as its processor does)."""
        s = request.image.over(self.config.image)
        if self.server != "vllm":
            return {}
        out: dict[str, Any] = {}
        if s.splitting is not None:
            out["do_image_splitting"] = s.splitting
        if request.frames:
            edge = frame_edge(request.images, self.image_edge(request.image) or LONGEST_EDGE, s.max_image_size or TILE)
            out["size"] = {"longest_edge": edge}
        elif s.longest_edge is not None:
            out["size"] = {"longest_edge": s.longest_edge}
        if s.max_image_size is not None:
            out["max_image_size"] = {"longest_edge": s.max_image_size}
        return out

    def probe(self) -> str | None:
        """``GET /models``: any HTTP answer below 500 means the server is there again."""
        self.load()
        assert self._client is not None
        try:
            status = self._client.get("/models", timeout=min(10.0, self.config.timeout)).status_code
        except httpx.HTTPError as exc:
            return self._redact(f"cannot reach {self.endpoint}: {type(exc).__name__}: {exc}")
        return f"HTTP {status} from {self.endpoint}" if status >= 500 or status == 429 else None

    def _one(self, request: Request) -> Answer:
        """One request's answer; whatever goes wrong with it is its own error, credentials redacted."""
        try:
            return self._ask(request)
        except _Outage as exc:
            return Answer(text="", error=exc)
        except Exception as exc:  # noqa: BLE001 - one bad answer fails only its own request
            return Answer(text="", error=InferenceError(self._redact(
                f"remote model {self.config.name!r} at {self.endpoint}: unusable answer: {type(exc).__name__}: {exc}")))

    def _ask(self, request: Request) -> Answer:
        body = self._body(request)
        start = time.perf_counter()
        limit = BODY_BASE + BODY_PER_TOKEN * request.generation.max_new_tokens
        last, retry_after = "", None
        assert self._client is not None  # generate loads first
        for attempt in range(RETRIES):
            if self._cancelled.is_set():
                return Answer(text="", error=InferenceError("cancelled: the daemon is stopping"))
            if attempt:
                time.sleep(retry_after if retry_after is not None
                           else min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.8, 1.2))
            try:
                status, data, headers = self._post(body, limit)
            except httpx.TransportError as exc:
                last, retry_after = self._redact(f"cannot reach {self.endpoint}: {type(exc).__name__}: {exc}"), None
                continue
            except _Deadline as exc:  # the server is there, this answer is not coming: its own failure
                return Answer(text="", error=InferenceError(f"remote model {self.config.name!r} at "
                                                            f"{self.endpoint}: {exc}"))
            if status == 200:
                answer = self._answer(json.loads(data), time.perf_counter() - start)
                return replace(answer, text=self._redact(answer.text), image=self.applied(request.image))
            detail = self._redact(_detail(status, data))
            if status != 429 and status < 500:
                return Answer(text="", error=InferenceError(
                    f"remote model {self.config.name!r} at {self.endpoint} refused the request "
                    f"(HTTP {status}): {detail}"))
            last, retry_after = f"HTTP {status} from {self.endpoint}: {detail}", _retry_after(headers)
            if retry_after is not None and retry_after > RETRY_AFTER_CAP:
                break
        raise _Outage(f"model server unreachable: {last}", retry_after)

    def _post(self, body: dict[str, Any], limit: int) -> tuple[int, bytes, httpx.Headers]:
        """POST one request: its status, body and headers, read within ``model.timeout`` in all
        (a server trickling bytes does not hold a file for ever) and at most ``limit`` bytes."""
        assert self._client is not None
        deadline = time.monotonic() + self.config.timeout
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"the answer is over {limit} bytes, more than {body['max_tokens']} tokens "
                                     "can need; not read further")
                if time.monotonic() > deadline:
                    raise _Deadline(f"no complete answer within model.timeout ({self.config.timeout:g} s)")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks), response.headers

    def _redact(self, text: str) -> str:
        """``text`` with every credential we send replaced (a 401 body may echo our headers)."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text.replace(self.base_url, self.endpoint)

    @staticmethod
    def _answer(payload: Any, seconds: float) -> Answer:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        message = (choices[0] or {}).get("message") if isinstance(choices, list) and choices else None
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"no text in the answer ({json.dumps(payload)[:200]})")
        usage = payload.get("usage") or {}
        return Answer(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0), seconds=seconds,
                      new_tokens=int(usage.get("completion_tokens") or 0))


class _Outage(InferenceError):
    """A request that could not reach the server (``generate`` turns it into ``Unreachable``)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


class _Deadline(Exception):
    """A request's total deadline passed while its answer was still arriving."""


def _retry_after(headers: httpx.Headers) -> float | None:
    """A ``Retry-After`` in seconds (a number, or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _detail(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        detail = data.get("detail") or data.get("error") or data
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
        return str(detail)[:300]
    return str(data)[:300]
