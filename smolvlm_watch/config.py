"""The YAML config: parsed once, validated whole, frozen.

Every error names the key path, the bad value and what is allowed, so a user can fix the file
without reading code. Relative paths are resolved against the config file's folder, so a config
means the same thing whether it runs from a shell or from systemd.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from .media.base import MEDIA_EXTENSIONS, Limits
from .settings import (Key, Reader, auto_bool, duration, file_mode, is_text, join, keys, on_off_as_words,
                       setting, show)

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
DEFAULT_TASKS = ("caption", "tags")
DEFAULT_OUTPUTS = ("json", "txt")
METRICS_PORT = 9464  # the port Prometheus' list of exporter ports leaves to small daemons
WEB_PORT = 8765


class ConfigError(Exception):
    """One or more problems in a config file; ``str()`` lists each on its own line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid config {source}:" if source else "invalid config:"
        super().__init__("\n".join([head] + [f"  {p}" for p in problems]))


def _suffix(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(".") and "/" not in v


_PROMPT: dict[str, Any] = {"check": is_text, "expect": "a non-empty string"}
_SUFFIX: dict[str, Any] = {"check": _suffix, "expect": "a suffix starting with '.'"}


@dataclass(frozen=True)
class ImageSettings:
    """How the processor resizes and tiles an image; None means 'the processor's own default'."""

    longest_edge: int | None = setting(None, minimum=1)
    max_image_size: int | None = setting(None, minimum=1)
    splitting: bool | None = setting(None, name="image_splitting")

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
    """What every backend shares: which model, which backend runs it, and the image settings.
    A backend's own keys (``model.dtype``, ``model.base_url``, ...) are declared by the backend,
    on a subclass of this (``Backend.model``); until the plugins are loaded they wait in
    ``options``, and ``Registry.check`` reads them into that subclass."""

    id: str = setting(DEFAULT_MODEL_ID, check=lambda v: isinstance(v, str) and v != "", expect="a hub id")
    path: Path | None = setting(None)
    revision: str | None = setting(None)
    image: ImageSettings = setting(ImageSettings(), flat=True)
    preload: bool = setting(True)
    backend: str = setting("transformers", check=lambda v: isinstance(v, str) and v != "", expect="a backend name")
    options: dict[str, Any] = field(default_factory=dict, metadata={"resolved": False})  # the backend's keys, unread

    @property
    def source(self) -> str:
        """What logs, status and sidecars call the model: the local folder, else the hub id (a
        backend may say otherwise: a server's model is named with its URL)."""
        return str(self.path) if self.path else self.id

    def unapplied(self, image: ImageSettings) -> str | None:
        """Who will not apply these per-task image settings (say, a server without per-request
        processor options), in words, or None: this process applies them all."""
        return None


@dataclass(frozen=True)
class VideoConfig:
    """Video sampling; None means the loaded processor's own setting."""

    fps: float | None = setting(None, minimum=0.001)
    max_frames: int | None = setting(None, minimum=1)
    mode: Literal["accurate", "keyframes"] = setting("accurate")  # keyframes: decode keyframes only (fast backfills)
    skip_black: bool = setting(True)
    timeout: float = setting(120.0, minimum=1)


TASK_VIDEO = ("fps", "max_frames", "mode")  # what a task may set of its own sampling


def _task_video(r: Reader, data: dict, where: str, name: str, default: Any, got: dict) -> dict[str, Any]:
    """A task's own sampling: only the keys it sets, laid over the watch's at run time."""
    where = join(where, name)
    raw = r.mapping(data.get(name), where, TASK_VIDEO)
    read = r.values(VideoConfig, {k: v for k, v in raw.items() if k in TASK_VIDEO}, where, {})
    return {k: v for k, v in read.items() if k in TASK_VIDEO and v is not None}


def _task_options(r: Reader, data: dict, where: str, name: str, default: Any, got: dict) -> dict[str, Any]:
    """``options``, and the keys given directly on the task that are not its own settings."""
    given = data.get(name)
    if given is not None and not isinstance(given, dict):
        r.fail(join(where, name), f"expected a mapping, got {show(given)}")
        given = None
    return {**(given or {}), **{k: v for k, v in data.items() if k not in keys(TaskConfig)}}


@dataclass(frozen=True)
class TaskConfig:
    """Per-task settings; None fields fall back to the plugin's defaults. ``options`` may also be
    given directly on the task (``tasks.ocr.use_text_layer``); ``direct`` names those, so an
    error can point at the key the user wrote. The task's own schema checks them all."""

    prompt: str | None = setting(None, **_PROMPT)
    max_new_tokens: int | None = setting(None, minimum=1)
    options: dict[str, Any] = setting(factory=dict, read=_task_options)
    video: dict[str, Any] = setting(factory=dict, read=_task_video)  # this task's own fps, max_frames, mode
    when: Literal["always", "text-seen"] | None = setting(None)  # text-seen: on a photo, where a yes/no gate says so
    gate_prompt: str | None = setting(None, **_PROMPT)  # that question, when not the built-in one
    image: ImageSettings = setting(ImageSettings(), flat=True)
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
    policy: Literal["merge", "skip", "overwrite"] = setting("merge")
    output_dir: Path | None = setting(None)
    json_suffix: str = setting(".smolvlm.json", **_SUFFIX)
    ocr_suffix: str = setting(".txt", **_SUFFIX)
    caption_txt: bool = setting(False)
    mode: int = setting(0o644, read=file_mode)  # of new sidecars (a replaced one keeps its own; a default ACL wins)
    xmp_replace_extension: bool = setting(False)  # photo.xmp (Lightroom) instead of photo.jpg.xmp
    xmp_keyword_parent: str = setting("AI")  # tags go under it in lr:hierarchicalSubject / digiKam:TagsList


@dataclass(frozen=True)
class DocumentConfig:
    """PDF and multi-page TIFF handling."""

    dpi: int = setting(200, minimum=36)
    max_pages: int = setting(1000, minimum=1)
    max_page_pixels: int = setting(60_000_000, minimum=1)
    pages: Literal["first", "each", "all"] = setting("first")  # what caption/tags/ask look at
    all_max_pages: int = setting(4, minimum=1)


def _watch_tasks(r: Reader, data: dict, where: str, key: str, default: Any, got: dict) -> tuple[str, ...]:
    """Watch tasks are names, or one-key mappings carrying that task's overrides for this watch
    (read into ``task_overrides``, which follows)."""
    raw, got["task_overrides"] = data.get(key), {}
    if raw is None:
        return DEFAULT_TASKS
    if not isinstance(raw, list) or not raw:
        r.fail(join(where, key), f"expected a non-empty list of task names, got {show(raw)}")
        return DEFAULT_TASKS
    names = []
    for i, item in enumerate(raw):
        here = join(join(where, key), i)
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            (name, settings), = item.items()
            names.append(str(name))
            got["task_overrides"][str(name)] = task(r, settings, f"{here}.{name}")
        else:
            r.fail(here, f"expected a task name or {{name: {{settings}}}}, got {show(item)}")
    return tuple(names)


Polling = Literal["auto", "on", "off"]
GpsPolicy = Literal["keep", "place-only", "off"]


@dataclass(frozen=True)
class WatchConfig:
    path: Path = setting()
    recursive: bool = setting(True)
    include: tuple[str, ...] = setting(())
    exclude: tuple[str, ...] = setting(())
    tasks: tuple[str, ...] = setting(DEFAULT_TASKS, read=_watch_tasks)
    task_overrides: dict[str, TaskConfig] = field(default_factory=dict)
    outputs: tuple[str, ...] = setting(DEFAULT_OUTPUTS)
    polling: Polling = setting("auto", read=on_off_as_words(Polling))
    poll_interval: float = setting(10.0, minimum=0.1)
    settle_seconds: float = setting(2.0)
    max_settle_seconds: float = setting(600.0, minimum=1)
    video: VideoConfig = setting(VideoConfig())
    raw_pairs: Literal["independent", "prefer-jpeg"] = setting("independent")  # a RAW with a JPEG: the JPEG's answers?
    output: OutputConfig = setting(OutputConfig(), flat=True)

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
        raise ValueError(f"expected host:port such as 127.0.0.1:{default_port}, got {show(value)}")
    return Address(host, int(port))


def _listen(port: int, refusal: str, needs_token: bool) -> Any:
    """A reader of ``SECTION.listen``: None (off) unless set; an address beyond loopback only
    with ``allow_remote`` (and a ``token_env`` where ``needs_token``), else ``refusal`` says
    what it would expose and what to set."""
    def read(r: Reader, data: dict, where: str, key: str, default: Any, got: dict) -> Address | None:
        value = data.get(key)
        if value is None or value is False:
            return None
        try:
            address = parse_listen(value, port)
        except ValueError as exc:
            r.fail(join(where, key), str(exc))
            return None
        if not address.loopback and not (got["allow_remote"] and (got.get("token_env") or not needs_token)):
            r.fail(join(where, key), f"{address} is not a loopback address: {refusal}")
        return address
    return read


@dataclass(frozen=True)
class MetricsConfig:
    """The metrics name every watched folder: not for the whole network by accident."""

    allow_remote: bool = setting(False)  # a non-loopback listen address only with this
    listen: Address | None = setting(None, read=_listen(METRICS_PORT, "the metrics name every watched folder; set "
                                     "metrics.allow_remote: true to serve them beyond this machine", False))


def _hosts(r: Reader, data: dict, where: str, key: str, default: Any, got: dict) -> tuple[str, ...]:
    value = r.value(data, where, key, Key(), tuple[str, ...], default, got)
    return tuple(h.lower() for h in value)


@dataclass(frozen=True)
class WebConfig:
    """The pages show every watched file and its results: beyond loopback only with a token."""

    allow_remote: bool = setting(False)  # a non-loopback listen address only with this and a token
    token_env: str | None = setting(None, check=lambda v: isinstance(v, str) and v != "",
                                    expect="an environment variable name")  # holds the token a browser must show
    thumb_cache_mb: float = setting(256.0, minimum=1)  # previews cached in the state folder, oldest dropped past this
    hosts: tuple[str, ...] = setting((), read=_hosts)  # host names a browser may use, besides the listen address
    listen: Address | None = setting(None, read=_listen(WEB_PORT, "the pages show every watched file; set "
                                     "web.allow_remote: true and web.token_env (a token every browser must give)",
                                     True))


def default_state_dir() -> Path:
    """$STATE_DIRECTORY under systemd, else the XDG state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "smolvlm-watch"


@dataclass(frozen=True)
class StateConfig:
    db: Path = setting(factory=lambda: default_state_dir() / "journal.sqlite")
    max_attempts: int = setting(5, minimum=1)
    retry_base_seconds: float = setting(30.0)
    retry_max_seconds: float = setting(3600.0)
    lease_seconds: float = setting(900.0, minimum=1)
    item_timeout: float = setting(1800.0, minimum=1)
    rescan_interval: float = setting(300.0, minimum=1)
    stop_grace_seconds: float = setting(20.0)  # at a stop, a running job may finish within this; then cancelled
    gone_grace: float = setting(7 * 86400.0, read=duration)  # a vanished file's sidecars are kept this long


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = setting("info")
    format: Literal["auto", "console", "json"] = setting("auto")


@dataclass(frozen=True)
class MediaConfig:
    max_pixels: int = setting(100_000_000, minimum=1)
    max_bytes: int = setting(4 * 1024**3, minimum=1)


@dataclass(frozen=True)
class ContextConfig:
    gps: GpsPolicy = setting("place-only", read=on_off_as_words(GpsPolicy))  # what of a photo's position leaves it


@dataclass(frozen=True)
class RuntimeConfig:
    max_batch: int | None = setting(None, minimum=1)  # None: an automatic default per device
    prefetch: int | None = setting(None, minimum=1)  # None: 4 on CPU (at least a batch), the batch on a GPU
    compile: bool = setting(False)  # static KV cache + torch.compile of the decode step
    prepare_ahead: bool | None = setting(None, read=auto_bool)  # pixels prepared in the prefetch threads; auto: GPU


@dataclass(frozen=True)
class Config:
    model: ModelConfig = setting(ModelConfig())
    tasks: dict[str, TaskConfig] = setting(factory=dict)
    watches: tuple[WatchConfig, ...] = setting(())
    outputs: OutputConfig = setting(OutputConfig())
    state: StateConfig = setting(factory=StateConfig)
    logging: LoggingConfig = setting(LoggingConfig())
    media: MediaConfig = setting(MediaConfig())
    runtime: RuntimeConfig = setting(RuntimeConfig())
    video: VideoConfig = setting(VideoConfig())
    document: DocumentConfig = setting(DocumentConfig())
    metrics: MetricsConfig = setting(MetricsConfig())
    web: WebConfig = setting(WebConfig())
    context: ContextConfig = setting(ContextConfig())
    plugins: tuple[str, ...] = setting(())
    source: Path | None = None

    def task_config(self, name: str, watch: WatchConfig | None = None) -> TaskConfig:
        """The settings a task runs with in a watch: the watch's overrides over the global ones."""
        base = self.tasks.get(name, TaskConfig())
        if watch and name in watch.task_overrides:
            return watch.task_overrides[name].over(base)
        return base

    def limits(self) -> Limits:
        """What every input is held to (``media.*``, ``document.*``): the pipeline and the web
        page's previews alike, so a preview never decodes what processing would refuse."""
        return Limits(max_pixels=self.media.max_pixels, max_bytes=self.media.max_bytes, dpi=self.document.dpi,
                      max_pages=self.document.max_pages, max_page_pixels=self.document.max_page_pixels)

    def watch_for(self, path: Path) -> WatchConfig | None:
        """The most specific watch a file lies in (the deepest folder wins)."""
        hits = [w for w in self.watches if w.contains(path)]
        return max(hits, key=lambda w: len(w.path.resolve().parts)) if hits else None


# Every key of every section: what the parser accepts (a key not listed is an error with the
# known ones) and what README's config reference must document (a test holds it to that).
SECTIONS: dict[str, tuple[str, ...]] = {
    "": keys(Config), "model": keys(ModelConfig), "tasks.NAME": keys(TaskConfig), "tasks.NAME.video": TASK_VIDEO,
    "outputs": keys(OutputConfig), "watches[]": keys(WatchConfig), "state": keys(StateConfig),
    "logging": keys(LoggingConfig), "metrics": keys(MetricsConfig), "web": keys(WebConfig),
    "media": keys(MediaConfig), "runtime": keys(RuntimeConfig), "video": keys(VideoConfig),
    "document": keys(DocumentConfig), "context": keys(ContextConfig),
}


# the sections read as they are declared, nothing inherited
_SECTIONS: dict[str, type] = {"state": StateConfig, "logging": LoggingConfig, "media": MediaConfig,
                              "runtime": RuntimeConfig, "document": DocumentConfig, "metrics": MetricsConfig,
                              "web": WebConfig, "context": ContextConfig}


def task(r: Reader, raw: Any, where: str) -> TaskConfig:
    """A task's settings (keys besides its own are its options, given directly)."""
    data = r.mapping(raw, where, None)
    return replace(r.build(TaskConfig, data, where),
                   direct=frozenset(str(k) for k in data if k not in SECTIONS["tasks.NAME"]))


def _check_suffixes(r: Reader, where: str, out: OutputConfig, given: set[str]) -> None:
    """A sidecar suffix that is also a media extension would make every such file look like a
    sidecar (and never be processed); two outputs with one suffix would overwrite each other.
    Reported where the suffix is set, not again in every watch that inherits it."""
    for key in ("json_suffix", "ocr_suffix"):
        if key not in given:
            continue
        value = getattr(out, key)
        last = "." + value.rsplit(".", 1)[-1].lower()
        if last in MEDIA_EXTENSIONS or last == ".xmp":
            r.fail(join(where, key), f"{value!r} ends like a media file or an XMP sidecar ({last}); "
                                     "choose a suffix such as .smolvlm.json or .txt")
    if out.json_suffix == out.ocr_suffix and given & {"json_suffix", "ocr_suffix"}:
        r.fail(join(where, "ocr_suffix"), f"{out.ocr_suffix!r} is also outputs.json_suffix: the OCR text would "
                                          "overwrite the JSON sidecar; give them different suffixes")


def _watch(r: Reader, raw: Any, where: str, outputs: OutputConfig, video: VideoConfig) -> WatchConfig | None:
    """A watch: a bare string is its path; its outputs and video settings inherit the global ones."""
    data = r.mapping({"path": raw} if isinstance(raw, str) else raw, where, SECTIONS["watches[]"])
    got = r.values(WatchConfig, data, where, {**_watch_defaults(), "output": outputs, "video": video})
    _check_suffixes(r, where, got["output"], set(data))
    if got["path"] is None:
        r.fail(join(where, "path"), "missing: every watch needs the folder it watches")
        return None
    return WatchConfig(**got)


def _watch_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(WatchConfig) if f.default is not MISSING}


def _check_watch_paths(r: Reader, watches: list[WatchConfig | None]) -> None:
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
    """Validate a loaded YAML document into a Config, or raise ConfigError listing every problem.
    Sections read generically from their declarations; the global outputs and video first, as
    each watch inherits them."""
    r = Reader(base_dir)
    top = r.mapping(data, "", SECTIONS[""]) if data is not None else {}
    if data is not None and not isinstance(data, dict):
        raise ConfigError(r.problems, str(source) if source else None)
    outputs = r.section(OutputConfig, top.get("outputs"), "outputs")
    _check_suffixes(r, "outputs", outputs, set(top["outputs"]) if isinstance(top.get("outputs"), dict) else set())
    video = r.section(VideoConfig, top.get("video"), "video")
    raw_watches = top.get("watches") or []
    if not isinstance(raw_watches, list):
        r.fail("watches", f"expected a list of watches, got {show(raw_watches)}")
        raw_watches = []
    watches = [_watch(r, w, f"watches[{i}]", outputs, video) for i, w in enumerate(raw_watches)]
    _check_watch_paths(r, watches)
    tasks_raw = r.mapping(top.get("tasks"), "tasks", None)  # which tasks exist is the plugins' to say
    model = r.mapping(top.get("model"), "model", None)  # the backend's keys are its own to check
    config = Config(
        model=replace(r.build(ModelConfig, model, "model"),
                      options={k: v for k, v in model.items() if k not in SECTIONS["model"]}),
        tasks={str(k): task(r, v, f"tasks.{k}") for k, v in tasks_raw.items()},
        watches=tuple(w for w in watches if w is not None),
        outputs=outputs, video=video,
        plugins=r.value(top, "", "plugins", Key(), tuple[str, ...], (), {}),
        source=source,
        **{name: r.section(cls, top.get(name), name) for name, cls in _SECTIONS.items()},
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
    backend: str = ModelConfig.backend
    model_keys: tuple[str, ...] = ()  # the keys under model: that the core does not declare


def names(config: Config) -> Names:
    used = [("model.backend", "backend", config.model.backend), *((f"tasks.{n}", "task", n) for n in config.tasks)]
    for i, w in enumerate(config.watches):
        used += [(f"watches[{i}].tasks[{j}]", "task", n) for j, n in enumerate(w.tasks)]
        used += [(f"watches[{i}].outputs[{j}]", "output", n) for j, n in enumerate(w.outputs)]
    return Names(config.plugins, tuple(used), config.model.backend, tuple(config.model.options))


def raw_names(path: str | Path) -> Names:
    """``names`` of a file that did not parse, as far as its YAML can be read."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return Names()
    if not isinstance(data, dict):
        return Names()
    model, tasks, watches = (data.get(k) for k in ("model", "tasks", "watches"))
    model = model if isinstance(model, dict) else {}
    named = isinstance(model.get("backend"), str)
    backend = model["backend"] if named else ModelConfig.backend
    used: list[tuple[str, str, str]] = [("model.backend", "backend", backend)] if named else []
    used += [(f"tasks.{n}", "task", n) for n in (tasks if isinstance(tasks, dict) else {}) if isinstance(n, str)]
    for i, w in enumerate(watches if isinstance(watches, list) else []):
        w = w if isinstance(w, dict) else {}
        for j, t in _listed(w.get("tasks")):
            name = next(iter(t)) if isinstance(t, dict) and len(t) == 1 else t
            if isinstance(name, str):
                used.append((f"watches[{i}].tasks[{j}]", "task", name))
        used += [(f"watches[{i}].outputs[{j}]", "output", o)
                 for j, o in _listed(w.get("outputs")) if isinstance(o, str)]
    return Names(tuple(p for _, p in _listed(data.get("plugins")) if isinstance(p, str)), tuple(used), backend,
                 tuple(str(k) for k in model if k not in SECTIONS["model"]))


def _listed(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def with_model(config: Config, model: str) -> Config:
    """The config with ``--model`` applied: an existing folder is a local path, a hub id
    (``NAME`` or ``NAMESPACE/NAME``) the hub's; what can only be a path names a missing folder."""
    path = Path(model).expanduser()
    if path.is_dir():
        m = replace(config.model, path=path.resolve())
    elif model.startswith(("/", ".", "~")) or model.count("/") > 1 or path.exists():
        what = "not a folder" if path.exists() else "no such folder"
        raise ConfigError([f"--model {model}: {what} (a Hugging Face Hub id is NAME or NAMESPACE/NAME)"])
    else:
        m = replace(config.model, id=model, path=None)
    return replace(config, model=m)


def resolved(config: Config) -> dict[str, Any]:
    """The config as plain data, every default filled in: what ``config check`` prints."""
    def plain(value: Any) -> Any:
        if isinstance(value, Address):
            return str(value)
        if hasattr(value, "__dataclass_fields__"):
            return {k: plain(shown(f, getattr(value, k))) for k, f in value.__dataclass_fields__.items()
                    if f.metadata.get("resolved", True)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    def shown(f: Any, value: Any) -> Any:
        key = f.metadata.get("key")
        return key.shown(value) if key is not None and key.shown is not None and value is not None else value

    out = plain(config)
    out.pop("source", None)
    return out
