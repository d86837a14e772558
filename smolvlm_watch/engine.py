"""The named model interface: what the pipeline and the tasks say to a model, and what comes back.

A task describes *what* to ask (``Request``: a conversation, generation and image settings);
an ``Engine`` decides *how* to run it: in-process transformers (``runtime.Runtime``), an
OpenAI-compatible server (``remote.RemoteRuntime``), or a third-party backend. Both built-ins
import this module and nothing of each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from collections.abc import Sequence

from PIL import Image

from .config import ImageSettings, ModelConfig, RuntimeConfig


class Interrupted(Exception):
    """The engine was cancelled (the daemon is stopping): answers in flight are incomplete and
    must not be recorded; the jobs go back to the queue."""


class Unreachable(Interrupted):
    """The model server cannot be reached now (connection refused, timeouts, 5xx, 429): the
    batch's answers are not the files' fault. The jobs go back to the queue without an attempt
    counted, and the worker pauses and probes (``Engine.probe``) until it answers again.
    ``retry_after``: seconds the server asked us to wait (a 429's ``Retry-After``), if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadError(Exception):
    """The model could not be loaded; the message says which, why, and how to fix it."""


class InferenceError(Exception):
    """A request failed in the model (out of memory, a shape the model rejects)."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode: greedy, bounded, with a loop guard so a degenerate answer ends."""

    max_new_tokens: int = 256
    min_new_tokens: int | None = None
    loop_guard: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                "do_sample": False, "loop_guard": self.loop_guard}


@dataclass(frozen=True)
class Request:
    """One question about one or more images: a chat conversation in transformers' format whose
    image items stand for ``images`` in order."""

    images: tuple[Image.Image, ...]
    messages: tuple[dict[str, Any], ...]
    generation: GenerationSettings = GenerationSettings()
    image: ImageSettings = ImageSettings()
    video: Any = None  # a video.Clip: its frames and timestamps stand for the conversation's video item
    # ``images`` are a video's frames, asked about one by one: a backend never upscales them past
    # their own size (SmolVLM's docs: "videos should not be upsampled"; the frames were decoded
    # at the size the model looks at a video in, so upscaling adds tiles, not detail)
    frames: bool = False


@dataclass(frozen=True)
class Answer:
    text: str
    token_ids: tuple[int, ...] = ()
    prompt_tokens: int = 0
    seconds: float = 0.0
    error: InferenceError | None = None
    new_tokens: int = 0
    image: dict[str, Any] | None = None  # the image settings the backend applied, where they differ from the request's


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar's ``model`` records."""

    id: str
    revision: str | None
    dtype: str | None
    device: str | None
    backend: str
    endpoint: str | None = None  # the remote backend's base URL
    quantize: str | None = None  # the weight format when it is not ``dtype``'s: int8

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "revision": self.revision, "dtype": self.dtype, "device": self.device,
               "backend": self.backend}
        if self.endpoint:
            out["endpoint"] = self.endpoint
        if self.quantize:
            out["quantize"] = self.quantize
        return out


def frame_edge(images: Sequence[Image.Image], edge: int, tile: int) -> int:
    """The longest edge a video's frames are resized to before tiling (``Request.frames``): their
    own, rounded up to whole tiles, never past ``edge``. A 512-pixel frame is then one tile where
    a photo's default (2048) would make it 13 tiles of the same pixels upscaled."""
    own = max(max(image.size) for image in images)
    return min(edge, -(-own // tile) * tile)


def question(prompt: str, images: int = 1, video: bool = False) -> tuple[dict[str, Any], ...]:
    """The user turn SmolVLM2 is trained on: the images (or the video) first, then the text."""
    media = [{"type": "video"}] if video else [{"type": "image"} for _ in range(images)]
    return ({"role": "user", "content": media + [{"type": "text", "text": prompt}]},)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of settings; equal fingerprints mean an equal result would be computed."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]



Level = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One line of ``doctor``: how it stands, what was found, and the fix when it is not ok."""

    level: Level
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level:<4}  {self.what}" + (f" — fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Backend:
    """A model backend, registered by a plugin (``register_backends``) and chosen by
    ``model.backend``. ``model`` declares its keys: a subclass of ``ModelConfig`` whose fields
    are ``setting(...)`` declarations, read from the config's ``model:`` section (the keys it
    does not declare are refused there with the ones it does). ``create(model, runtime)``
    builds its engine from that (not loaded yet: loading is the engine's ``load``);
    ``check(model)`` lists what is wrong with those settings, each with its key path, before
    anything starts; ``doctor(config)`` describes the backend for ``doctor``: the model at hand,
    the device, the engine."""

    name: str
    create: Callable[[Any, RuntimeConfig], Engine]
    description: str = ""
    check: Callable[[Any], list[str]] = lambda model: []
    model: type[ModelConfig] = ModelConfig
    doctor: Callable[[Any], list[Check]] = lambda config: []


class Engine(Protocol):
    """What the pipeline needs of a model backend. ``generate`` answers every request (a failed
    one gets an ``Answer`` with ``error``, never an exception, except ``Interrupted`` and its
    kind ``Unreachable``)."""

    vision_passes: int

    @property
    def loaded(self) -> bool: ...

    @property
    def prepares_ahead(self) -> bool: ...

    def load(self) -> None: ...

    def info(self) -> ModelInfo: ...

    def generate(self, requests: Sequence[Request]) -> list[Answer]: ...

    def max_batch(self) -> int: ...

    def video_sampling(self) -> dict[str, Any]:
        """``fps`` and ``max_frames`` a video is sampled at unless the config says otherwise, and
        ``edge``: the longest side frames need (None: unknown, kept as decoded)."""
        ...

    def image_edge(self, settings: ImageSettings) -> int | None:
        """The longest edge, in pixels, of what the model looks at under these image settings
        (None: unknown): photos need not be decoded larger."""
        ...

    def preprocess(self, requests: Sequence[Request]) -> None: ...

    def cancel(self) -> None: ...

    def probe(self) -> str | None:
        """Whether the model answers now, after ``generate`` raised ``Unreachable``: None when
        it does, else why not (an in-process engine always does)."""
        ...


class Outage:
    """The model server out of reach: since when, its last error, and when to look again. The
    queue waits meanwhile (no file is charged an attempt for it) and probes with back-off."""

    FIRST_WAIT = 2.0
    MAX_WAIT = 60.0

    def __init__(self, log: Any):
        self.log = log
        self.since: float | None = None  # wall clock
        self.error = ""
        self.next_probe = 0.0  # monotonic
        self._wait = self.FIRST_WAIT

    def down(self, error: str, retry_after: float | None = None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.since is None:
            self.since, self._wait = time.time(), self.FIRST_WAIT
            self.log.error("model_server_unreachable", error=error, meaning="the queue waits; no file is charged")
        self.error = error
        self.next_probe = now + (retry_after if retry_after is not None else self._wait)
        self._wait = min(self.MAX_WAIT, self._wait * 2)

    def up(self) -> None:
        if self.since is not None:
            self.log.warning("model_server_back", down_seconds=round(time.time() - self.since, 1))
        self.since, self.error = None, ""

    def reachable(self, engine: Engine, now: float | None = None) -> bool:
        """False while the server is out of reach; at each probe time, ``engine.probe()`` again."""
        if self.since is None:
            return True
        now = time.monotonic() if now is None else now
        if now < self.next_probe:
            return False
        why = engine.probe()
        if why is None:
            self.up()
            return True
        self.down(why, now=now)
        return False

    def describe(self) -> str | None:
        if self.since is None:
            return None
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"model server unreachable since {since}, last error: {self.error}"
