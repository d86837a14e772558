"""Video decoding with PyAV: a few upright frames at evenly spaced timestamps, memory bounded.

transformers' own video loading wants torchcodec; here we seek to each sampled timestamp and
decode forward from the keyframe before it, so a four-hour film costs about as much as a clip,
and memory holds only the sampled frames. The frames and their timestamps then go to SmolVLM's
processor with ``VideoMetadata``, which writes SmolVLM2's trained video prompt.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from collections.abc import Iterator

from PIL import Image, ImageStat

from . import capture
from .base import Media, MediaError, broken, open_input, source_info

DECODER = "PyAV (FFmpeg)"
BLACK_LUMA = 12.0
LONG_ENOUGH_FOR_BLACK_SKIP = 10.0  # seconds
NO_DURATION_FRAME_CAP = 200_000  # frames decoded at most when a container gives no duration


def sniff(head: bytes) -> bool:
    """ISO BMFF (mp4/mov/m4v: 'ftyp' at offset 4), Matroska/WebM (EBML), AVI (RIFF....AVI )."""
    return (head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI "))


@dataclass(frozen=True)
class Sampling:
    """How frames are picked: ``fps`` frames per second of video, at most ``max_frames``;
    ``keyframes`` decodes only keyframes (fast, for big backfills); ``timeout`` bounds decoding;
    ``edge``: frames are kept no longer than this on their longest side (what the processor
    resizes them to), so 64 frames of a 4K phone video hold ~50 MB, not 1.6 GB."""

    fps: float = 1.0
    max_frames: int = 64
    mode: str = "accurate"  # accurate | keyframes
    skip_black: bool = True
    timeout: float = 120.0
    edge: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"fps": self.fps, "max_frames": self.max_frames, "mode": self.mode, "skip_black": self.skip_black}


@dataclass(frozen=True)
class Clip:
    """Sampled frames with what the processor's VideoMetadata needs."""

    frames: tuple[Image.Image, ...]
    timestamps: tuple[float, ...]
    duration: float
    fps: float
    total_frames: int
    width: int
    height: int
    extra: dict[str, Any] = field(default_factory=dict)


def sample_timestamps(duration: float, sampling: Sampling) -> list[float]:
    """Centres of ``n`` equal slices of the clip: n = duration × fps, between 1 and max_frames."""
    n = max(1, min(sampling.max_frames, int(round(duration * sampling.fps))))
    return [round(duration * (i + 0.5) / n, 6) for i in range(n)]


def _is_black(img: Image.Image) -> bool:
    return ImageStat.Stat(img.convert("L").resize((32, 32))).mean[0] < BLACK_LUMA


class _Decoder:
    """One open container; ``at(t)`` decodes the first frame at or after ``t``."""

    def __init__(self, f: BinaryIO, path: Path, sampling: Sampling):
        import av

        self.deadline = time.monotonic() + sampling.timeout
        self.path = path
        f.seek(0)
        try:
            self.container = av.open(f, timeout=30)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"not a readable video: {_said(exc)}") from None
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["nothing"]
            self.container.close()
            raise MediaError(path, f"no video stream (the file holds {', '.join(kinds)})")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        if sampling.mode == "keyframes":
            self.stream.codec_context.skip_frame = "NONKEY"
        self.keyframes = sampling.mode == "keyframes"
        self.edge = sampling.edge
        self.rotation = 0
        self.size = (0, 0)  # the last frame's, upright, before any downscale: what the video shows

    def _image(self, frame: Any) -> Image.Image:
        """The frame upright, scaled down (by FFmpeg's swscale, area-averaged) to ``edge``."""
        self.rotation = int(getattr(frame, "rotation", 0) or 0)
        w, h = frame.width, frame.height
        self.size = (h, w) if self.rotation % 180 else (w, h)
        if self.edge and max(w, h) > self.edge:
            scale = self.edge / max(w, h)
            img = frame.to_image(width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                                 interpolation="AREA")
        else:
            img = frame.to_image()
        return img.rotate(self.rotation, expand=True) if self.rotation % 360 else img

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise MediaError(self.path, "video decoding exceeded its time limit (video.timeout)", transient=True)

    def at(self, t: float):
        """(frame image, its timestamp) for the first decodable frame at or after t (or the last)."""
        import av

        tb = self.stream.time_base
        self.container.seek(max(0, int(t / tb)) + (self.stream.start_time or 0), stream=self.stream,
                            backward=True)
        last = None
        try:
            for frame in self.container.decode(self.stream):
                self._check_time()
                if frame.time is None:
                    continue
                last = frame
                if self.keyframes or frame.time + 1e-3 >= t:
                    break
        except av.error.FFmpegError as exc:
            if last is None:
                raise MediaError(self.path, f"corrupt or truncated video: {_said(exc)}") from None
        if last is None:
            return None
        return self._image(last), float(last.time)

    def scan(self, sampling: Sampling) -> tuple[list, float]:
        """No duration in the container: decode through, keeping frames at the sampling rate and
        thinning them evenly so memory stays bounded. Returns ([(image, t)], duration)."""
        import av

        kept: list[tuple[Image.Image, float]] = []
        step, next_t, t, count = 1.0 / sampling.fps, 0.0, 0.0, 0
        try:
            for frame in self.container.decode(self.stream):
                self._check_time()
                count += 1
                if count > NO_DURATION_FRAME_CAP:
                    break
                t = float(frame.time) if frame.time is not None else t
                if t + 1e-6 >= next_t:
                    kept.append((self._image(frame), t))
                    next_t = t + step
                    if len(kept) >= 2 * sampling.max_frames:
                        kept, step = kept[::2], step * 2
        except av.error.FFmpegError as exc:
            if not kept:
                raise MediaError(self.path, f"corrupt or truncated video: {_said(exc)}") from None
        if len(kept) > sampling.max_frames:
            idx = [int(i * len(kept) / sampling.max_frames) for i in range(sampling.max_frames)]
            kept = [kept[i] for i in idx]
        return kept, t

    def close(self) -> None:
        self.container.close()


def _duration(dec: _Decoder) -> float | None:
    s = dec.stream
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    if dec.container.duration:
        return dec.container.duration / 1_000_000
    return None


def _nudge(dec: _Decoder, picked: list, duration: float) -> list:
    """Skip black lead-in and lead-out: move the first and last samples inwards (5% steps)."""
    if duration < LONG_ENOUGH_FOR_BLACK_SKIP or len(picked) < 2:
        return picked
    for index, direction in ((0, 1), (-1, -1)):
        img, t = picked[index]
        for step in range(1, 4):
            if not _is_black(img):
                break
            found = dec.at(min(max(0.0, t + direction * step * 0.05 * duration), duration))
            if found is None:
                break
            img, t = found
        picked[index] = (img, t)
    return picked


def decode(source: Path | BinaryIO, sampling: Sampling, path: Path | None = None) -> Clip:
    """Sample a video (a path, or an input already opened with ``open_input``); every failure
    is a MediaError with a readable reason."""
    if isinstance(source, (str, Path)):
        path = Path(source)
    path = path or Path("<video>")
    with _opened(source) as f:
        try:
            return _decode(_Decoder(f, path, sampling), sampling)
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes the decoder raise
            raise broken(path, "corrupt or truncated video", exc) from None


@contextlib.contextmanager
def _opened(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, (str, Path)):
        f, _ = open_input(Path(source))
        with f:
            yield f
    else:
        yield source


def _decode(dec: _Decoder, sampling: Sampling) -> Clip:
    path = dec.path
    try:
        s = dec.stream
        codec = s.codec_context.name
        avg = float(s.average_rate) if s.average_rate else None
        duration = _duration(dec)
        if duration and duration > 0:
            picked = []
            for t in sample_timestamps(duration, sampling):
                found = dec.at(t)
                if found is not None:
                    picked.append(found)
            if sampling.skip_black:
                picked = _nudge(dec, picked, duration)
        else:
            picked, duration = dec.scan(sampling)
        if not picked:
            raise MediaError(path, "the video has no decodable frames")
        total = s.frames or (int(round(duration * avg)) if avg else len(picked))
    finally:
        dec.close()
    frames = tuple(img for img, _ in picked)
    return Clip(frames=frames, timestamps=tuple(round(t, 3) for _, t in picked), duration=round(duration, 3),
                fps=round(avg, 3) if avg else 0.0, total_frames=int(total),
                width=dec.size[0], height=dec.size[1], extra={"codec": codec, "rotation": dec.rotation})


def capture_of(f: BinaryIO, path: Path) -> capture.Capture:
    """A video's capture from its container's tags alone (no frame decoded)."""
    import av

    f.seek(0)
    try:
        with av.open(f, timeout=30) as container:
            return capture.from_container(dict(container.metadata))
    except av.error.FFmpegError as exc:
        return capture.Capture(notes=(f"container unreadable ({_said(exc)})",))


def load_video(f: BinaryIO, path: Path, st: os.stat_result, sha256: str, sampling: Sampling) -> Media:
    """A video as Media: sampled frames as images, the clip for the runtime, sidecar sections."""
    clip = decode(f, sampling, path)
    info = source_info(path, st, sha256, "video", clip.width, clip.height, duration=clip.duration, fps=clip.fps,
                       frame_count=clip.total_frames, codec=clip.extra["codec"])
    extra = {"video": {"sampled_timestamps": list(clip.timestamps), "sampling": sampling.as_dict()}}
    return Media(info=info, images=clip.frames, sidecar_extra=extra, clip=clip)


def frame_at(f: BinaryIO, path: Path, t: float) -> Image.Image:
    """The first decodable frame at or after ``t`` (or the last one), upright."""
    dec = _Decoder(f, path, Sampling())
    try:
        found = dec.at(t)
    finally:
        dec.close()
    if found is None:
        raise MediaError(path, f"no decodable frame at or after {t:g} s")
    return found[0]


def timestamp_label(seconds: float) -> str:
    m, s = divmod(int(math.floor(seconds)), 60)
    return f"{m:02d}:{s:02d}"


def _said(exc: Exception) -> str:
    """What FFmpeg said, without PyAV's wrapping: its str() carries the raw AVERROR number and the
    name PyAV gave the input (a file descriptor's number), which tell a user nothing."""
    return getattr(exc, "strerror", None) or str(exc)
