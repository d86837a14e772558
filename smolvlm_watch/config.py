"""The YAML config: parsed once, validated whole, frozen.

Every error names the key path, the bad value and what is allowed, so a user can fix the file
without reading code. Relative paths are resolved against the config file's folder, so a config
means the same thing whether it runs from a shell or from systemd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import yaml

from .media.base import MEDIA_EXTENSIONS

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
DEFAULT_TASKS = ("caption", "tags")
DEFAULT_OUTPUTS = ("json", "txt")
POLICIES = ("merge", "skip", "overwrite")
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
LOG_FORMATS = ("auto", "console", "json")
POLLING = ("auto", "on", "off")
RAW_PAIRS = ("independent", "prefer-jpeg")  # a RAW shot with a JPEG: its own answers, or the JPEG's


class ConfigError(Exception):
    """One or more problems in a config file; ``str()`` lists each on its own line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid config {source}:" if source else "invalid config:"
        super().__init__("\n".join([head] + [f"  {p}" for p in problems]))


@dataclass(frozen=True)
class ImageSettings:
    """How the processor resizes and tiles an image; None means 'the processor's own default'."""

    longest_edge: int | None = None
    max_image_size: int | None = None
    splitting: bool | None = None

    def over(self, base: ImageSettings) -> ImageSettings:
        """These settings laid over ``base``: ours win where set."""
        return ImageSettings(
            longest_edge=self.longest_edge if self.longest_edge is not None else base.longest_edge,
            max_image_size=self.max_image_size if self.max_image_size is not None else base.max_image_size,
            splitting=self.splitting if self.splitting is not None else base.splitting,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"longest_edge": self.longest_edge, "max_image_size": self.max_image_size,
                "splitting": self.splitting}


@dataclass(frozen=True)
class ModelConfig:
    id: str = DEFAULT_MODEL_ID
    path: Path | None = None
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    quantize: str = "none"  # none | int8: the linear layers as int8 on the CPU (torch's dynamic quantization)
    attn_implementation: str | None = None
    local_files_only: bool = False
    image: ImageSettings = ImageSettings()
    preload: bool = True
    threads: int | None = None
    backend: str = "transformers"  # transformers | openai
    base_url: str | None = None  # openai: http://host:port/v1
    name: str | None = None  # openai: the endpoint's model name
    api_key_env: str | None = None  # openai: environment variable holding the API key
    timeout: float = 120.0  # openai: seconds per request
    concurrency: int = 8  # openai: requests in flight
    image_format: str = "jpeg"  # openai: how images are sent (jpeg: quality 95, 4:4:4; png: lossless)
    server: str = "auto"  # openai: auto (asks the server) | vllm (takes per-request processor options) | generic

    @property
    def source(self) -> str:
        """What from_pretrained is given (the local folder, else the hub id), or the remote model
        (its URL without credentials: this is what logs, status and sidecars show)."""
        if self.backend == "openai":
            return f"{self.name} at {self.endpoint}"
        return str(self.path) if self.path else self.id

    @property
    def endpoint(self) -> str | None:
        """``base_url`` as it may be shown or recorded: without user:password or a query."""
        return redact_url(self.base_url) if self.base_url else None


@dataclass(frozen=True)
class TaskConfig:
    """Per-task settings; None fields fall back to the plugin's defaults. ``options`` may also be
    given directly on the task (``tasks.ocr.use_text_layer``); ``direct`` names those, so an
    error can point at the key the user wrote. The task's own schema checks them all."""

    prompt: str | None = None
    max_new_tokens: int | None = None
    image: ImageSettings = ImageSettings()
    options: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)  # this task's own video sampling (fps, max_frames, mode)
    when: str | None = None  # "always" (None) or "text-seen": on a photo, only where a first yes/no question says so
    gate_prompt: str | None = None  # that question, when not the built-in one
    direct: frozenset[str] = field(default=frozenset(), metadata={"resolved": False})  # bookkeeping, not a key

    def over(self, base: TaskConfig) -> TaskConfig:
        return TaskConfig(
            prompt=self.prompt if self.prompt is not None else base.prompt,
            max_new_tokens=self.max_new_tokens if self.max_new_tokens is not None else base.max_new_tokens,
            image=self.image.over(base.image),
            options={**base.options, **self.options},
            video={**base.video, **self.video},
            when=self.when if self.when is not None else base.when,
            gate_prompt=self.gate_prompt if self.gate_prompt is not None else base.gate_prompt,
            direct=base.direct | self.direct,
        )


@dataclass(frozen=True)
class OutputConfig:
    policy: str = "merge"
    output_dir: Path | None = None
    json_suffix: str = ".smolvlm.json"
    ocr_suffix: str = ".txt"
    caption_txt: bool = False
    xmp_replace_extension: bool = False  # photo.xmp (Lightroom) instead of photo.jpg.xmp
    xmp_keyword_parent: str = "AI"  # tags go under this parent in lr:hierarchicalSubject / digiKam:TagsList
    mode: int = 0o644  # of new sidecars (a replaced one keeps its own; a folder's default ACL wins)


@dataclass(frozen=True)
class VideoConfig:
    """Video sampling; None means the loaded processor's own setting."""

    fps: float | None = None
    max_frames: int | None = None
    mode: str = "accurate"  # accurate | keyframes (decode keyframes only: fast backfills)
    skip_black: bool = True
    timeout: float = 120.0


@dataclass(frozen=True)
class DocumentConfig:
    """PDF and multi-page TIFF handling."""

    dpi: int = 200
    max_pages: int = 1000
    max_page_pixels: int = 60_000_000
    pages: str = "first"  # what caption/tags/ask look at: first | each | all
    all_max_pages: int = 4


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tasks: tuple[str, ...] = DEFAULT_TASKS
    task_overrides: dict[str, TaskConfig] = field(default_factory=dict)
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    output: OutputConfig = OutputConfig()
    polling: str = "auto"
    poll_interval: float = 10.0
    settle_seconds: float = 2.0
    max_settle_seconds: float = 600.0
    video: VideoConfig = VideoConfig()
    raw_pairs: str = "independent"

    def contains(self, path: Path) -> bool:
        """Whether ``path`` lies in this watch: its folder, resolved (a watch reached through a
        symlink, or named through one), holds it. The file itself is not resolved: a symlink
        in the watch belongs to the watch, whatever it points at (the filter judges that)."""
        try:
            rel = (path.parent.resolve() / path.name).relative_to(self.path.resolve())
        except ValueError:
            return False
        return self.recursive or len(rel.parts) == 1


@dataclass(frozen=True)
class Address:
    """Where an HTTP listener binds."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        import ipaddress

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a name: it may resolve anywhere


def parse_listen(value: Any, default_port: int) -> Address:
    """``host:port`` (``[::1]:9464`` for IPv6), a bare port (on 127.0.0.1) or ``true`` (the
    default port on 127.0.0.1); ValueError otherwise."""
    if value is True:
        return Address("127.0.0.1", default_port)
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if isinstance(value, bool) or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ValueError(f"expected host:port such as 127.0.0.1:{default_port}, got {_show(value)}")
    return Address(host, int(port))


@dataclass(frozen=True)
class MetricsConfig:
    listen: Address | None = None  # off by default; `true` is 127.0.0.1:9464
    allow_remote: bool = False  # a non-loopback listen address only with this


@dataclass(frozen=True)
class WebConfig:
    listen: Address | None = None  # off by default; `true` is 127.0.0.1:8765
    allow_remote: bool = False  # a non-loopback listen address only with this and a token
    token_env: str | None = None  # the environment variable holding the token a browser must show
    thumb_cache_mb: float = 256.0  # previews cached in the state folder, oldest dropped past this
    hosts: tuple[str, ...] = ()  # host names a browser may reach the page by, besides the listen address


@dataclass(frozen=True)
class StateConfig:
    db: Path = field(default_factory=lambda: default_state_dir() / "journal.sqlite")
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 900.0
    item_timeout: float = 1800.0
    rescan_interval: float = 300.0
    stop_grace_seconds: float = 20.0  # at a stop, a running job may finish within this; then it is cancelled
    gone_grace: float = 7 * 86400.0  # seconds a vanished file's sidecars are kept before `prune` removes them


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class MediaConfig:
    max_pixels: int = 100_000_000
    max_bytes: int = 4 * 1024**3


@dataclass(frozen=True)
class RuntimeConfig:
    max_batch: int | None = None  # None: an automatic default per device
    prefetch: int | None = None  # None: enough to fill a batch (4 on CPU, the batch size on a GPU)
    compile: bool = False  # static KV cache + torch.compile of the decode step
    prepare_ahead: bool | None = None  # pixels prepared in the prefetch threads; None: on a GPU only


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    watches: tuple[WatchConfig, ...] = ()
    outputs: OutputConfig = OutputConfig()
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = LoggingConfig()
    media: MediaConfig = MediaConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    video: VideoConfig = VideoConfig()
    document: DocumentConfig = DocumentConfig()
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    plugins: tuple[str, ...] = ()
    source: Path | None = None

    def task_config(self, name: str, watch: WatchConfig | None = None) -> TaskConfig:
        """The settings a task runs with in a watch: the watch's overrides over the global ones."""
        base = self.tasks.get(name, TaskConfig())
        if watch and name in watch.task_overrides:
            return watch.task_overrides[name].over(base)
        return base

    def watch_for(self, path: Path) -> WatchConfig | None:
        """The most specific watch a file lies in (the deepest folder wins)."""
        hits = [w for w in self.watches if w.contains(path)]
        return max(hits, key=lambda w: len(w.path.resolve().parts)) if hits else None


def redact_url(url: str) -> str:
    """A URL with its credentials (``user:password@``) and query removed: ``base_url`` may carry
    them, and nothing that is logged, printed or written to a sidecar ever does."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def default_state_dir() -> Path:
    """$STATE_DIRECTORY under systemd, else the XDG state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "smolvlm-watch"


# --- parsing -----------------------------------------------------------------------------------

class _Reader:
    """Walks a YAML mapping, collecting problems (with key paths) instead of stopping at the first."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: Any, where: str, known: tuple[str, ...] | None) -> dict[str, Any]:
        """A mapping's keys checked against ``known`` (None: any key; a later check knows them)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_show(value)}")
            return {}
        if known is not None:
            for key in value:
                if key not in known:
                    self.fail(f"{where}.{key}" if where else str(key), f"unknown key (known: {', '.join(known)})")
        return value

    def get(self, data: dict, key: str, where: str, kind: Callable[[Any], bool], expect: str,
            default: Any = None) -> Any:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if not kind(value):
            self.fail(_join(where, key), f"expected {expect}, got {_show(value)}")
            return default
        return value

    def choice(self, data: dict, key: str, where: str, allowed: tuple[str, ...], default: Any) -> Any:
        value = data.get(key, default)
        if value is None:
            return default
        if value not in allowed:
            self.fail(_join(where, key), f"{_show(value)} is not allowed (allowed: {', '.join(allowed)})")
            return default
        return value

    def number(self, data: dict, key: str, where: str, default: Any, minimum: float = 0,
               integer: bool = False) -> Any:
        kind = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number
        value = self.get(data, key, where, kind, "an integer" if integer else "a number", default)
        if value is not None and value < minimum:
            self.fail(_join(where, key), f"{_show(value)} is too small (minimum {minimum})")
            return default
        return value

    @overload
    def path(self, data: dict, key: str, where: str, default: Path) -> Path: ...

    @overload
    def path(self, data: dict, key: str, where: str, default: None = None) -> Path | None: ...

    def path(self, data: dict, key: str, where: str, default: Path | None = None) -> Path | None:
        value = self.get(data, key, where, lambda v: isinstance(v, str) and v != "", "a path", None)
        if value is None:
            return default
        p = Path(os.path.expandvars(value)).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def strings(self, data: dict, key: str, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(_join(where, key), f"expected a list of strings, got {_show(value)}")
            return default
        return tuple(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _auto_bool(v: Any) -> bool | None:
    return None if v == "auto" else v


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else type(value).__name__


_IMAGE_KEYS = ("longest_edge", "max_image_size", "image_splitting")


def _image(r: _Reader, data: dict, where: str) -> ImageSettings:
    return ImageSettings(
        longest_edge=r.number(data, "longest_edge", where, None, minimum=1, integer=True),
        max_image_size=r.number(data, "max_image_size", where, None, minimum=1, integer=True),
        splitting=r.get(data, "image_splitting", where, _is_bool, "true or false"),
    )


def _model(r: _Reader, raw: Any) -> ModelConfig:
    data = r.mapping(raw, "model", SECTIONS["model"])
    text = lambda v: isinstance(v, str) and v != ""  # noqa: E731
    # which backends exist, and what each needs, is the plugins' to say (Registry.check)
    backend = r.get(data, "backend", "model", text, "a backend name", "transformers")
    return ModelConfig(
        backend=backend,
        base_url=r.get(data, "base_url", "model", lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
                       "an http(s) URL"),
        name=r.get(data, "name", "model", text, "the endpoint's model name"),
        api_key_env=r.get(data, "api_key_env", "model", text, "an environment variable name"),
        timeout=r.number(data, "timeout", "model", 120.0, minimum=1),
        concurrency=r.number(data, "concurrency", "model", 8, minimum=1, integer=True),
        image_format=r.choice(data, "image_format", "model", ("jpeg", "png"), "jpeg"),
        server=r.choice(data, "server", "model", ("auto", "vllm", "generic"), "auto"),
        id=r.get(data, "id", "model", lambda v: isinstance(v, str) and v != "", "a hub id", DEFAULT_MODEL_ID),
        path=r.path(data, "path", "model"),
        revision=r.get(data, "revision", "model", lambda v: isinstance(v, str), "a string"),
        dtype=r.choice(data, "dtype", "model", DTYPES, "auto"),
        quantize=r.choice(data, "quantize", "model", ("none", "int8"), "none"),
        device=r.choice(data, "device", "model", DEVICES, "auto"),
        attn_implementation=r.get(data, "attn_implementation", "model", lambda v: isinstance(v, str), "a string"),
        local_files_only=r.get(data, "local_files_only", "model", _is_bool, "true or false", False),
        image=_image(r, data, "model"),
        preload=r.get(data, "preload", "model", _is_bool, "true or false", True),
        threads=r.number(data, "threads", "model", None, minimum=1, integer=True),
    )


TASK_KEYS = ("prompt", "max_new_tokens", "options", "video", "when", "gate_prompt") + _IMAGE_KEYS
WHEN = ("always", "text-seen")


def _task(r: _Reader, raw: Any, where: str) -> TaskConfig:
    data = r.mapping(raw, where, None)  # keys besides TASK_KEYS are the task's options, given directly
    options = r.get(data, "options", where, lambda v: isinstance(v, dict), "a mapping", {})
    direct = {k: v for k, v in data.items() if k not in TASK_KEYS}
    options = {**options, **direct}
    return TaskConfig(
        prompt=r.get(data, "prompt", where, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
        max_new_tokens=r.number(data, "max_new_tokens", where, None, minimum=1, integer=True),
        image=_image(r, data, where),
        options=options,
        video=_task_video(r, data.get("video"), _join(where, "video")),
        when=r.choice(data, "when", where, WHEN, None),
        gate_prompt=r.get(data, "gate_prompt", where, lambda v: isinstance(v, str) and v.strip() != "",
                          "a non-empty string"),
        direct=frozenset(map(str, direct)),
    )


def _task_video(r: _Reader, raw: Any, where: str) -> dict[str, Any]:
    """A task's own sampling: only the keys it sets, laid over the watch's at run time."""
    data = r.mapping(raw, where, SECTIONS["tasks.NAME.video"])
    out = {"fps": r.number(data, "fps", where, None, minimum=0.001),
           "max_frames": r.number(data, "max_frames", where, None, minimum=1, integer=True),
           "mode": r.choice(data, "mode", where, ("accurate", "keyframes"), None)}
    return {k: v for k, v in out.items() if v is not None}


_OUTPUT_KEYS = ("policy", "output_dir", "json_suffix", "ocr_suffix", "caption_txt", "mode", "xmp_replace_extension",
                "xmp_keyword_parent")

# Every key of every section: what the parser accepts (a key not listed is an error with the
# known ones) and what README's config reference must document (a test holds it to that).
SECTIONS: dict[str, tuple[str, ...]] = {
    "": ("model", "tasks", "watches", "outputs", "state", "logging", "media", "runtime", "video", "document",
         "metrics", "web", "plugins"),
    "model": ("id", "path", "revision", "dtype", "device", "quantize", "attn_implementation", "local_files_only",
              "preload", "threads", "backend", "base_url", "name", "api_key_env", "timeout", "concurrency",
              "image_format", "server") + _IMAGE_KEYS,
    "tasks.NAME": TASK_KEYS,
    "tasks.NAME.video": ("fps", "max_frames", "mode"),
    "outputs": _OUTPUT_KEYS,
    "watches[]": ("path", "recursive", "include", "exclude", "tasks", "outputs", "polling", "poll_interval",
                  "settle_seconds", "max_settle_seconds", "video", "raw_pairs") + _OUTPUT_KEYS,
    "state": ("db", "max_attempts", "retry_base_seconds", "retry_max_seconds", "lease_seconds", "item_timeout",
              "rescan_interval", "stop_grace_seconds", "gone_grace"),
    "logging": ("level", "format"),
    "metrics": ("listen", "allow_remote"),
    "web": ("listen", "allow_remote", "token_env", "thumb_cache_mb", "hosts"),
    "media": ("max_pixels", "max_bytes"),
    "runtime": ("max_batch", "prefetch", "compile", "prepare_ahead"),
    "video": ("fps", "max_frames", "mode", "skip_black", "timeout"),
    "document": ("dpi", "max_pages", "max_page_pixels", "pages", "all_max_pages"),
}


def _output(r: _Reader, data: dict, where: str, base: OutputConfig) -> OutputConfig:
    suffix = lambda v: isinstance(v, str) and v.startswith(".") and "/" not in v  # noqa: E731
    out = OutputConfig(
        policy=r.choice(data, "policy", where, POLICIES, base.policy),
        output_dir=r.path(data, "output_dir", where, base.output_dir),
        json_suffix=r.get(data, "json_suffix", where, suffix, "a suffix starting with '.'", base.json_suffix),
        ocr_suffix=r.get(data, "ocr_suffix", where, suffix, "a suffix starting with '.'", base.ocr_suffix),
        caption_txt=r.get(data, "caption_txt", where, _is_bool, "true or false", base.caption_txt),
        xmp_replace_extension=r.get(data, "xmp_replace_extension", where, _is_bool, "true or false",
                                    base.xmp_replace_extension),
        xmp_keyword_parent=r.get(data, "xmp_keyword_parent", where, lambda v: isinstance(v, str), "a string",
                                 base.xmp_keyword_parent),
        mode=_mode(r, data, where, base.mode),
    )
    _check_suffixes(r, where, out, set(data))
    return out


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(r: _Reader, data: dict, key: str, where: str, default: float) -> float:
    """Seconds, written as a number or as "7d", "12h", "30m", "45s"."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, str) and len(value) > 1 and value[-1] in _UNITS and value[:-1].strip().isdigit():
        return float(value[:-1]) * _UNITS[value[-1]]
    if _is_number(value) and value >= 0:
        return float(value)
    r.fail(_join(where, key), f"expected seconds or a duration such as \"7d\", \"12h\", \"30m\", got {_show(value)}")
    return default


def _mode(r: _Reader, data: dict, where: str, default: int) -> int:
    """A file mode, written as YAML's octal ``0644`` (read as a number) or as a string "0644"."""
    value = data.get("mode")
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("0o").isdigit() and set(value.strip()) <= set("0o1234567"):
        value = int(value.strip().replace("0o", "0"), 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    r.fail(_join(where, "mode"), f"expected a file mode such as 0644 or \"0640\", got {_show(value)}")
    return default


def _check_suffixes(r: _Reader, where: str, out: OutputConfig, given: set[str]) -> None:
    """A sidecar suffix that is also a media extension would make every such file look like a
    sidecar (and never be processed); two outputs with one suffix would overwrite each other.
    Reported where the suffix is set, not again in every watch that inherits it."""
    for key in ("json_suffix", "ocr_suffix"):
        if key not in given:
            continue
        value = getattr(out, key)
        last = "." + value.rsplit(".", 1)[-1].lower()
        if last in MEDIA_EXTENSIONS or last == ".xmp":
            r.fail(_join(where, key), f"{value!r} ends like a media file or an XMP sidecar ({last}); "
                                      "choose a suffix such as .smolvlm.json or .txt")
    if out.json_suffix == out.ocr_suffix and given & {"json_suffix", "ocr_suffix"}:
        r.fail(_join(where, "ocr_suffix"), f"{out.ocr_suffix!r} is also outputs.json_suffix: the OCR text would "
                                           "overwrite the JSON sidecar; give them different suffixes")


def _watch_tasks(r: _Reader, data: dict, where: str) -> tuple[tuple[str, ...], dict[str, TaskConfig]]:
    """Watch tasks are names, or one-key mappings carrying that task's overrides for this watch."""
    raw = data.get("tasks")
    if raw is None:
        return DEFAULT_TASKS, {}
    if not isinstance(raw, list) or not raw:
        r.fail(_join(where, "tasks"), f"expected a non-empty list of task names, got {_show(raw)}")
        return DEFAULT_TASKS, {}
    names, overrides = [], {}
    for i, item in enumerate(raw):
        here = _join(_join(where, "tasks"), i)
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            (name, settings), = item.items()
            names.append(str(name))
            overrides[str(name)] = _task(r, settings, f"{here}.{name}")
        else:
            r.fail(here, f"expected a task name or {{name: {{settings}}}}, got {_show(item)}")
    return tuple(names), overrides


def _document(r: _Reader, raw: Any) -> DocumentConfig:
    d = DocumentConfig()
    data = r.mapping(raw, "document", SECTIONS["document"])
    return DocumentConfig(
        dpi=r.number(data, "dpi", "document", d.dpi, minimum=36, integer=True),
        max_pages=r.number(data, "max_pages", "document", d.max_pages, minimum=1, integer=True),
        max_page_pixels=r.number(data, "max_page_pixels", "document", d.max_page_pixels, minimum=1, integer=True),
        pages=r.choice(data, "pages", "document", ("first", "each", "all"), d.pages),
        all_max_pages=r.number(data, "all_max_pages", "document", d.all_max_pages, minimum=1, integer=True),
    )


def _video(r: _Reader, raw: Any, where: str, base: VideoConfig) -> VideoConfig:
    data = r.mapping(raw, where, SECTIONS["video"])
    return VideoConfig(
        fps=r.number(data, "fps", where, base.fps, minimum=0.001),
        max_frames=r.number(data, "max_frames", where, base.max_frames, minimum=1, integer=True),
        mode=r.choice(data, "mode", where, ("accurate", "keyframes"), base.mode),
        skip_black=r.get(data, "skip_black", where, _is_bool, "true or false", base.skip_black),
        timeout=r.number(data, "timeout", where, base.timeout, minimum=1),
    )


def _watch(r: _Reader, raw: Any, where: str, outputs: OutputConfig, video: VideoConfig) -> WatchConfig | None:
    if isinstance(raw, str):
        raw = {"path": raw}
    data = r.mapping(raw, where, SECTIONS["watches[]"])
    if isinstance(data.get("polling"), bool):  # YAML 1.1 reads a bare on/off as a boolean
        data = {**data, "polling": "on" if data["polling"] else "off"}
    path = r.path(data, "path", where)
    if path is None:
        r.fail(_join(where, "path"), "missing: every watch needs the folder it watches")
        return None
    tasks, overrides = _watch_tasks(r, data, where)
    return WatchConfig(
        path=path,
        recursive=r.get(data, "recursive", where, _is_bool, "true or false", True),
        include=r.strings(data, "include", where, ()),
        exclude=r.strings(data, "exclude", where, ()),
        tasks=tasks,
        task_overrides=overrides,
        outputs=r.strings(data, "outputs", where, DEFAULT_OUTPUTS),
        output=_output(r, data, where, outputs),
        polling=r.choice(data, "polling", where, POLLING, "auto"),
        poll_interval=r.number(data, "poll_interval", where, 10.0, minimum=0.1),
        settle_seconds=r.number(data, "settle_seconds", where, 2.0),
        max_settle_seconds=r.number(data, "max_settle_seconds", where, 600.0, minimum=1),
        video=_video(r, data.get("video"), _join(where, "video"), video),
        raw_pairs=r.choice(data, "raw_pairs", where, RAW_PAIRS, "independent"),
    )


def _state(r: _Reader, raw: Any) -> StateConfig:
    d = StateConfig()
    data = r.mapping(raw, "state", SECTIONS["state"])
    return StateConfig(
        db=r.path(data, "db", "state", d.db),
        max_attempts=r.number(data, "max_attempts", "state", d.max_attempts, minimum=1, integer=True),
        retry_base_seconds=r.number(data, "retry_base_seconds", "state", d.retry_base_seconds),
        retry_max_seconds=r.number(data, "retry_max_seconds", "state", d.retry_max_seconds),
        lease_seconds=r.number(data, "lease_seconds", "state", d.lease_seconds, minimum=1),
        item_timeout=r.number(data, "item_timeout", "state", d.item_timeout, minimum=1),
        rescan_interval=r.number(data, "rescan_interval", "state", d.rescan_interval, minimum=1),
        stop_grace_seconds=r.number(data, "stop_grace_seconds", "state", d.stop_grace_seconds),
        gone_grace=_duration(r, data, "gone_grace", "state", d.gone_grace),
    )


METRICS_PORT = 9464  # the port Prometheus' list of exporter ports leaves to small daemons


def _listen(r: _Reader, data: dict, section: str, port: int, allowed: bool, refusal: str) -> Address | None:
    """``SECTION.listen``: None (off) unless set; an address beyond loopback only when
    ``allowed``, else ``refusal`` says what it exposes and what to set."""
    value = data.get("listen")
    if value is None or value is False:
        return None
    try:
        address = parse_listen(value, port)
    except ValueError as exc:
        r.fail(f"{section}.listen", str(exc))
        return None
    if not address.loopback and not allowed:
        r.fail(f"{section}.listen", f"{address} is not a loopback address: {refusal}")
    return address


def _metrics(r: _Reader, raw: Any) -> MetricsConfig:
    """metrics.listen: a non-loopback address only with allow_remote (the metrics name every
    watched folder: not for the whole network by accident)."""
    data = r.mapping(raw, "metrics", SECTIONS["metrics"])
    allow = r.get(data, "allow_remote", "metrics", _is_bool, "true or false", False)
    listen = _listen(r, data, "metrics", METRICS_PORT, allow, "the metrics name every watched folder; set "
                     "metrics.allow_remote: true to serve them beyond this machine")
    return MetricsConfig(listen=listen, allow_remote=allow)


WEB_PORT = 8765


def _web(r: _Reader, raw: Any) -> WebConfig:
    """web.listen: beyond loopback only with allow_remote and a token: the pages show every
    watched file and its results."""
    data = r.mapping(raw, "web", SECTIONS["web"])
    allow = r.get(data, "allow_remote", "web", _is_bool, "true or false", False)
    token_env = r.get(data, "token_env", "web", lambda v: isinstance(v, str) and v != "",
                      "an environment variable name")
    cache = r.number(data, "thumb_cache_mb", "web", 256.0, minimum=1)
    hosts = tuple(h.lower() for h in r.strings(data, "hosts", "web", ()))
    listen = _listen(r, data, "web", WEB_PORT, bool(allow and token_env), "the pages show every watched file; set "
                     "web.allow_remote: true and web.token_env (a token every browser must give)")
    return WebConfig(listen, allow, token_env, cache, hosts)


def _check_watch_paths(r: _Reader, watches: list[WatchConfig | None]) -> None:
    """Two watches on one folder would arm two observers and race for every file; a watch on a
    regular file would be reported as an unmounted folder forever. A path that does not exist
    yet is fine (a share not mounted now)."""
    seen: dict[Path, int] = {}
    for i, w in enumerate(watches):
        if w is None:
            continue
        where = f"watches[{i}].path"
        if w.path.is_file():
            r.fail(where, f"{w.path} is a file, not a folder: a watch takes a folder (its parent, "
                          f"with include: [\"{w.path.name}\"], watches just this file)")
            continue
        key = w.path.resolve()
        if key in seen:
            r.fail(where, f"{w.path} is already watches[{seen[key]}]: one folder gets one watch; put both "
                          "watches' tasks in one, or split the folder with include/exclude into subfolders")
        seen.setdefault(key, i)


def parse(data: Any, base_dir: Path, source: Path | None = None) -> Config:
    """Validate a loaded YAML document into a Config, or raise ConfigError listing every problem."""
    r = _Reader(base_dir)
    top = r.mapping(data, "", SECTIONS[""]) if data is not None else {}
    if data is not None and not isinstance(data, dict):
        raise ConfigError(r.problems, str(source) if source else None)
    outputs = _output(r, r.mapping(top.get("outputs"), "outputs", SECTIONS["outputs"]), "outputs", OutputConfig())
    tasks_raw = r.mapping(top.get("tasks"), "tasks", tuple(top.get("tasks") or ()))
    raw_watches = top.get("watches") or []
    if not isinstance(raw_watches, list):
        r.fail("watches", f"expected a list of watches, got {_show(raw_watches)}")
        raw_watches = []
    video = _video(r, top.get("video"), "video", VideoConfig())
    watches = [_watch(r, w, f"watches[{i}]", outputs, video) for i, w in enumerate(raw_watches)]
    _check_watch_paths(r, watches)
    log = r.mapping(top.get("logging"), "logging", SECTIONS["logging"])
    media = r.mapping(top.get("media"), "media", SECTIONS["media"])
    runtime = r.mapping(top.get("runtime"), "runtime", SECTIONS["runtime"])
    config = Config(
        model=_model(r, top.get("model")),
        tasks={str(k): _task(r, v, f"tasks.{k}") for k, v in tasks_raw.items()},
        watches=tuple(w for w in watches if w is not None),
        outputs=outputs,
        state=_state(r, top.get("state")),
        logging=LoggingConfig(
            level=r.choice(log, "level", "logging", ("debug", "info", "warning", "error"), "info"),
            format=r.choice(log, "format", "logging", LOG_FORMATS, "auto"),
        ),
        media=MediaConfig(
            max_pixels=r.number(media, "max_pixels", "media", MediaConfig.max_pixels, minimum=1, integer=True),
            max_bytes=r.number(media, "max_bytes", "media", MediaConfig.max_bytes, minimum=1, integer=True),
        ),
        runtime=RuntimeConfig(
            max_batch=r.number(runtime, "max_batch", "runtime", None, minimum=1, integer=True),
            prefetch=r.number(runtime, "prefetch", "runtime", None, minimum=1, integer=True),
            compile=r.get(runtime, "compile", "runtime", _is_bool, "true or false", False),
            prepare_ahead=_auto_bool(r.get(runtime, "prepare_ahead", "runtime", lambda v: v == "auto" or _is_bool(v),
                                           "auto, true or false", "auto")),
        ),
        video=video,
        document=_document(r, top.get("document")),
        metrics=_metrics(r, top.get("metrics")),
        web=_web(r, top.get("web")),
        plugins=r.strings(top, "plugins", "plugins", ()),
        source=source,
    )
    if r.problems:
        raise ConfigError(r.problems, str(source) if source else None)
    return config


def load(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML ({problem})"], str(path)) from None
    return parse(data, path.resolve().parent, path.resolve())


@dataclass(frozen=True)
class Names:
    """The plugin names a config uses, each with its key path and kind (backend, task, output):
    from a parsed Config, or read leniently from a file that does not parse, so that unknown
    names are reported in the same pass as every other problem (``Registry.unknown``)."""

    plugins: tuple[str, ...] = ()
    used: tuple[tuple[str, str, str], ...] = ()


def names(config: Config) -> Names:
    used = [("model.backend", "backend", config.model.backend), *((f"tasks.{n}", "task", n) for n in config.tasks)]
    for i, w in enumerate(config.watches):
        used += [(f"watches[{i}].tasks[{j}]", "task", n) for j, n in enumerate(w.tasks)]
        used += [(f"watches[{i}].outputs[{j}]", "output", n) for j, n in enumerate(w.outputs)]
    return Names(config.plugins, tuple(used))


def raw_names(path: str | Path) -> Names:
    """``names`` of a file that did not parse, as far as its YAML can be read."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return Names()
    if not isinstance(data, dict):
        return Names()
    model, tasks, watches = (data.get(k) for k in ("model", "tasks", "watches"))
    used: list[tuple[str, str, str]] = []
    if isinstance(model, dict) and isinstance(model.get("backend"), str):
        used.append(("model.backend", "backend", model["backend"]))
    used += [(f"tasks.{n}", "task", n) for n in (tasks if isinstance(tasks, dict) else {}) if isinstance(n, str)]
    for i, w in enumerate(watches if isinstance(watches, list) else []):
        w = w if isinstance(w, dict) else {}
        for j, t in _listed(w.get("tasks")):
            name = next(iter(t)) if isinstance(t, dict) and len(t) == 1 else t
            if isinstance(name, str):
                used.append((f"watches[{i}].tasks[{j}]", "task", name))
        used += [(f"watches[{i}].outputs[{j}]", "output", o)
                 for j, o in _listed(w.get("outputs")) if isinstance(o, str)]
    return Names(tuple(p for _, p in _listed(data.get("plugins")) if isinstance(p, str)), tuple(used))


def _listed(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def with_model(config: Config, model: str) -> Config:
    """The config with ``--model`` applied: an existing folder is a local path, anything else a hub id."""
    if Path(model).expanduser().is_dir():
        m = replace(config.model, path=Path(model).expanduser().resolve())
    else:
        m = replace(config.model, id=model, path=None)
    return replace(config, model=m)


def resolved(config: Config) -> dict[str, Any]:
    """The config as plain data, every default filled in: what ``config check`` prints."""
    def plain(value: Any) -> Any:
        if isinstance(value, Address):
            return str(value)
        if hasattr(value, "__dataclass_fields__"):
            return {k: plain(getattr(value, k)) for k, f in value.__dataclass_fields__.items()
                    if f.metadata.get("resolved", True)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    out = plain(config)
    out.pop("source", None)
    if config.model.base_url:
        out["model"]["base_url"] = config.model.endpoint
    return out
