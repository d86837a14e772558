"""``smolvlm-watch doctor``: check a setup before trusting it to run for months.

One line per check — ``ok``, ``warn`` or ``FAIL`` — each problem with its fix; the exit code is
non-zero when anything FAILs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .engine import Check, Level

if TYPE_CHECKING:
    from .remote import RemoteModel
    from .runtime import TransformersModel
from .watcher import INOTIFY_FIX, MediaFilter, choose_mode, count_dirs, filesystem_type, max_user_watches

LOW_DISK_BYTES = 1 << 30


def transformers_checks(config: Config) -> list[Check]:
    """How the in-process backend stands: its model files, the device, the engine and precision."""
    return [check_model(config), check_device(config), check_engine(config)]


def remote_checks(config: Config) -> list[Check]:
    """How the OpenAI-compatible backend stands: the server answers; the device is its own."""
    from .remote import RemoteModel

    m = config.model
    assert isinstance(m, RemoteModel)
    return [check_endpoint(m), Check("ok", "device: the remote backend's"),
            Check("ok", f"engine: {m.backend} at {m.endpoint} (model.backend: {m.backend})")]


def _transformers(config: Config) -> TransformersModel:
    from .runtime import TransformersModel

    assert isinstance(config.model, TransformersModel), "checks of the transformers backend's settings"
    return config.model


def check_model(config: Config) -> Check:
    """The model's files are at hand: a local folder with weights, or the hub id in the local cache."""
    m = _transformers(config)
    if m.path is not None:
        if not (m.path / "config.json").is_file():
            return Check("FAIL", f"model folder {m.path} has no config.json",
                         "point model.path at a folder written by save_pretrained")
        if not list(m.path.glob("*.safetensors")):
            return Check("FAIL", f"model folder {m.path} has no .safetensors weights",
                         "save the model with safetensors (the default of save_pretrained)")
        return Check("ok", f"model {m.path} (local folder)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(m.id, "config.json", revision=m.revision)
    if isinstance(cached, str):
        return Check("ok", f"model {m.id} is in the local Hugging Face cache")
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "yes") or m.local_files_only
    hint = (f"download it once (`hf download {m.id}`, as the daemon's user, or with HF_HOME set to the "
            "unit's cache folder) or set model.path to a local copy")
    if offline:
        return Check("FAIL", f"model {m.id} is not in the local cache and offline mode is on", hint)
    reached = _hub_reachable()
    if reached is not True:
        return Check("FAIL", f"model {m.id} is not in the local cache and the hub cannot be reached ({reached})",
                     hint)
    return Check("warn", f"model {m.id} is not cached yet; it is downloaded at the first start", hint)


def _hub_reachable() -> str | bool:
    """True when the Hugging Face hub answers, else why not: a machine without network that
    has not cached the model would fail at its first start, so doctor must not pass."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=5, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{constants.ENDPOINT}: {type(exc).__name__}"
    return True


def check_endpoint(m: RemoteModel) -> Check:
    """The remote backend answers (any HTTP answer means the server is there)."""
    import httpx

    assert m.base_url is not None
    try:
        response = httpx.get(m.base_url.rstrip("/") + "/models", timeout=5)
    except httpx.HTTPError as exc:
        return Check("FAIL", f"remote backend {m.endpoint} cannot be reached ({type(exc).__name__})",
                     "start the server, or correct model.base_url (and the unit's network drop-in)")
    return Check("ok", f"remote backend {m.endpoint} answers (HTTP {response.status_code}), model {m.name}")


def check_writable(folder: Path, what: str) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".smolvlm-tmp-doctor-"):
            pass
    except OSError as exc:
        return Check("FAIL", f"{what} {folder} is not writable ({exc.strerror or exc})",
                     "give the daemon's user write access, or list the folder in the unit's ReadWritePaths=")
    return Check("ok", f"{what} {folder} is writable")


def check_watch(watch) -> list[Check]:
    if not watch.path.is_dir():
        return [Check("FAIL", f"watch {watch.path} does not exist or is not mounted", "create or mount it")]
    checks = []
    f = MediaFilter(watch)
    mode, reason = choose_mode(watch, f)
    fstype = filesystem_type(watch.path) or "unknown"
    checks.append(Check("ok", f"watch {watch.path}: {fstype} file system, {mode} ({reason})"))
    limit = max_user_watches()
    if limit is not None and mode == "native":
        dirs = count_dirs(watch, f, limit)
        level: Level = "warn" if dirs > limit * 0.8 else "ok"
        checks.append(Check(level, f"inotify: {dirs} folders under {watch.path}, max_user_watches {limit}",
                            INOTIFY_FIX if level != "ok" else ""))
    out = watch.output.output_dir or watch.path
    checks.append(check_writable(out, "output location"))
    return checks


def check_disk(path: Path, what: str) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    level: Level = "warn" if free < LOW_DISK_BYTES else "ok"
    return Check(level, f"free disk for {what} ({probe}): {free / 2**30:.1f} GiB",
                 "free some space: sidecar writes fail with ENOSPC and are retried" if level != "ok" else "")


def _weights_bytes(config: Config) -> int | None:
    if config.model.path is None:
        return None
    return sum(p.stat().st_size for p in config.model.path.glob("*.safetensors")) or None


def check_device(config: Config) -> Check:
    import torch

    weights = _weights_bytes(config)
    need = f", model weights {weights / 2**30:.2f} GiB" if weights else ""
    wanted = _transformers(config).device
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name()
        level: Level = "FAIL" if weights and weights * 1.5 > free else "ok"
        return Check(level, f"device cuda ({name}): {free / 2**30:.1f} of {total / 2**30:.1f} GiB free{need}",
                     "free GPU memory or pick a smaller model" if level != "ok" else "")
    if wanted == "cuda":
        return Check("FAIL", "model.device is cuda but no CUDA device is visible",
                     "install the NVIDIA driver (and the unit's GPU drop-in), or set model.device: auto")
    avail = mem_available()
    peak = expected_peak(config, weights) if weights else None
    short = bool(peak and avail and peak > avail)
    cpu: Level = "FAIL" if short else "warn" if peak and avail and peak > 0.8 * avail else "ok"
    mem = f", {avail / 2**30:.1f} GiB memory available (MemAvailable)" if avail else ""
    run = f", a run needs about {peak / 2**30:.1f} GiB at this precision" if peak else ""
    return Check(cpu, f"device cpu, {torch.get_num_threads()} threads{mem}{need}{run}",
                 "free memory, set model.quantize: int8 (about half), or pick a smaller model" if cpu != "ok" else "")


def mem_available(meminfo: str = "/proc/meminfo") -> int | None:
    """What the kernel says can be had without swapping (MemAvailable: free memory plus the page
    cache it can drop), not MemFree, which reads a busy NAS as full."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def expected_peak(config: Config, weights_on_disk: int) -> int:
    """A run's peak memory on the CPU: the runtime's own 0.5 GiB, the weights at the precision
    they run in (int8 linears plus the float32 rest: ~1.5 bytes a parameter), and ~5.5 bytes a
    parameter of pixels, activations and KV caches whatever the precision. Fitted to the
    household mix of ``bench/memory.py`` (camera JPEG, HEIC, video, scanned PDF; 2026-12-05,
    256M preset): float32 2,406 MB, int8 2,040 MB, bfloat16 2,016 MB; this gives 2,579, 2,035 and
    2,144 MB for them."""
    from .runtime import placement

    stored = 4 if _stored_dtype(config) == "float32" else 2
    params = weights_on_disk / stored
    where = placement(_transformers(config))
    weights = params * (1.5 if where.quantize == "int8" else 4 if where.dtype == "float32" else 2)
    return int(0.5 * 2**30 + weights + params * 5.5)


def _stored_dtype(config: Config) -> str | None:
    """The precision the weights were saved in (config.json), when the folder says."""
    try:
        raw = json.loads((config.model.path / "config.json").read_text()) if config.model.path else {}
    except (OSError, ValueError):
        return None
    return raw.get("torch_dtype") or raw.get("dtype") or (raw.get("text_config") or {}).get("dtype")


# What bench/engines.py and bench/openvino.py measured (README, Performance), as doctor says it
OPENVINO_VERDICT = ("on a CPU without native bf16 its vision tower measured slower than this engine's "
                    "(int8: 20.7 s against 13.3 s for 13 tiles)")
# Where the CPU has native bf16, OpenVINO computes in bf16 by default: that case is the one its
# published speed comes from, and no CPU this project was measured on had it.
OPENVINO_UNMEASURED = ("not measured against this engine on a CPU with native bf16, where OpenVINO computes in "
                       "bf16 (bench/engines.py and bench/openvino.py measure both)")
INT8_VERDICT = ("measured 1.4-2.0x faster on caption+tags+ocr on a CPU like this one (256M, 500M); "
                "answers may differ slightly")


def check_engine(config: Config) -> Check:
    """Which engine this config gets, and why: the backend, and for the in-process one where and
    in which precision it runs."""
    m = _transformers(config)
    import torch

    from .runtime import cpu_has_bf16, placement

    where = placement(m)
    note = ""
    if where.device == "cpu":
        verdict = OPENVINO_UNMEASURED if cpu_has_bf16() else OPENVINO_VERDICT
        note = f"; OpenVINO is not used: {verdict} (README, Performance)"
        if where.dtype == "float32" and not where.quantize:
            note += f"; model.quantize: int8 {INT8_VERDICT}"
    return Check("ok", f"engine: transformers (torch {torch.__version__}) on {where.device}, {where.dtype}: "
                       f"{where.why}{note}")


def run_checks(config: Config, backend: list[Check]) -> list[Check]:
    """Every check for a valid config: the backend's own (``Backend.doctor``: its model, device
    and engine), then the watches, the state folder and the disk."""
    checks = list(backend)
    if not config.watches:
        checks.append(Check("warn", "no watches configured: `run` would watch nothing", "add a watches: entry"))
    for watch in config.watches:
        checks.extend(check_watch(watch))
    checks.append(check_writable(config.state.db.parent, "state folder"))
    checks.append(check_disk(config.state.db.parent, "the journal"))
    for watch in config.watches:
        checks.append(check_disk(watch.output.output_dir or watch.path, "sidecars"))
    return checks


# Unit settings that are about starting and supervising the service, not about the sandbox the
# checks must run in (systemd-run would refuse or misapply them on a transient unit).
_NOT_SANDBOX = ("Type", "NotifyAccess", "ExecStart", "ExecReload", "ExecStop", "Restart", "RestartSec",
                "TimeoutStartSec", "TimeoutStopSec", "WatchdogSec")


# systemd.unit(5) specifiers of a system unit, resolved here: a transient unit's properties are
# taken literally.
_SPECIFIERS = {"%C": "/var/cache", "%S": "/var/lib", "%L": "/var/log", "%t": "/run", "%E": "/etc"}


def _resolved(line: str, instance: str) -> str:
    for spec, value in {**_SPECIFIERS, "%i": instance, "%I": instance}.items():
        line = line.replace(spec, value)
    return line.replace("%%", "%")


def service_properties(unit_text: str, instance: str = "") -> list[str]:
    """The [Service] settings of ``systemctl cat UNIT`` (the unit and its drop-ins, in order) that
    shape what the daemon can see and do, as ``KEY=VALUE`` for ``systemd-run -p``, specifiers
    resolved (``instance`` for ``%i``)."""
    props, section = [], ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key = line.split("=", 1)[0].strip()
        if section == "[Service]" and "=" in line and key not in _NOT_SANDBOX:
            props.append(_resolved(line, instance))
    return props


def as_service_command(unit: str, unit_text: str, argv: list[str]) -> list[str]:
    """``systemd-run`` running ``argv`` in ``unit``'s sandbox: its user, folders, protections and
    environment, waited for, its output piped back."""
    name = unit.removesuffix(".service")
    instance = name.split("@", 1)[1] if "@" in name else ""
    command = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", f"--unit={name.replace('@', '-')}-doctor"]
    for prop in service_properties(unit_text, instance):
        command += ["-p", prop]
    return command + ["--", *argv]


def systemd_is_pid1() -> str | None:
    """None when systemd runs this machine (sd_booted(3): /run/systemd/system exists), else why not."""
    if os.path.isdir("/run/systemd/system"):
        return None
    try:
        init = Path("/proc/1/comm").read_text().strip()
    except OSError:
        init = "unknown"
    return f"PID 1 is {init!r}, not systemd (a container or a chroot)"
