"""Videos: PyAV sampling, SmolVLM2's video prompt, sidecars, bad files, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers import InProcess, daemon_config, read_sidecar
from smolvlm_watch.media import MediaError, load
from smolvlm_watch.engine import Request, question
from smolvlm_watch.runtime import Runtime, TransformersModel
from smolvlm_watch.media.video import Sampling, decode, sample_timestamps


def make_clip(path: Path, seconds: float = 4, fps: int = 10, size=(64, 48), rotation: int = 0,
              codec: str = "mpeg4", gop: int = 10) -> Path:
    """A clip whose red channel encodes the second (60 × s) and with a white marker top-left."""
    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.gop_size = gop
    if rotation:
        stream.set_display_rotation(rotation)
    for i in range(int(seconds * fps)):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, :, 0] = min(255, (i // fps) * 60)
        img[:6, :6] = 255
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "count.mp4")


def test_sampled_timestamps_and_frame_colours(clip_path):
    clip = decode(clip_path, Sampling(fps=1, max_frames=64))
    assert list(clip.timestamps) == [0.5, 1.5, 2.5, 3.5]
    assert (clip.duration, clip.fps, clip.total_frames) == (4.0, 10.0, 40)
    for second, frame in enumerate(clip.frames):
        red = np.asarray(frame)[20:40, 20:50, 0].mean()
        assert abs(red - second * 60) < 12, (second, red)
    assert sample_timestamps(100.0, Sampling(fps=1, max_frames=4)) == [12.5, 37.5, 62.5, 87.5]
    assert sample_timestamps(0.2, Sampling(fps=1, max_frames=4)) == [0.1]


def test_keyframes_mode_is_bounded_and_close(clip_path):
    clip = decode(clip_path, Sampling(fps=1, max_frames=64, mode="keyframes"))
    assert len(clip.frames) == 4
    assert all(abs(t - round(t)) < 1e-6 for t in clip.timestamps)  # gop 10 at 10 fps: keyframes on the second


def test_ocr_reads_each_frame_at_its_own_tiles_never_upscaled_to_a_photos(tmp_path, tiny_model):
    """SmolVLM's docs: "videos should not be upsampled". OCR asks about each sampled frame as an
    image, and the processor first scales an image up to a photo's longest edge: a 512-pixel
    frame became 13 tiles of the same pixels on the real presets (2,309 MB and 160 s for a 10 s
    clip's OCR on a NAS CPU). A frame keeps its own tiles, rounded up; a photo is unchanged."""
    from smolvlm_watch_plugins.ocr import Ocr

    from smolvlm_watch.config import ImageSettings
    from smolvlm_watch.tasks import TaskSpec

    runtime = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))
    edge = runtime.video_sampling()["edge"]  # frames are decoded no larger than the video processor looks
    tile = runtime.processor.image_processor.max_image_size["longest_edge"]
    assert (edge, tile, runtime.image_edge(ImageSettings())) == (64, 64, 256)  # the tiny preset: 512/2048 scaled
    media = load(make_clip(tmp_path / "wide.mp4", seconds=2, size=(320, 180)),
                 sampling=Sampling(fps=1, max_frames=4, edge=edge))
    requests = Ocr().requests(media, TaskSpec(prompt="Read it.", max_new_tokens=4, image=ImageSettings()))
    assert len(requests) == 2 and all(r.frames and len(r.images) == 1 for r in requests)
    assert requests[0].images[0].size == (64, 36)
    frame = runtime.pixels(requests[0].images, requests[0].image, frames=True)
    assert frame.pixel_values.shape[0] == 1  # one tile: the frame as decoded
    assert frame.replacements[0].count("<image>") == runtime.processor.image_seq_len
    photo = runtime.pixels(requests[0].images, requests[0].image)  # the same pixels as a photo: upscaled
    assert photo.pixel_values.shape[0] == 4 * 3 + 1  # 256x144 in 64-pixel tiles, and the whole
    wider = runtime.pixels((requests[0].images[0].resize((100, 56)),), ImageSettings(), frames=True)
    assert wider.pixel_values.shape[0] == 2 * 2 + 1  # 128x72, each side up to whole tiles, and the whole
    answers = runtime.generate(requests)
    assert [a.error for a in answers] == [None, None]
    assert answers[0].prompt_tokens < 2 * runtime.processor.image_seq_len + 40


def test_prompt_token_ids_equal_the_processors_for_the_same_frames(clip_path, tiny_model):
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    runtime = Runtime(TransformersModel(path=tiny_model, threads=1))
    media = load(clip_path, sampling=Sampling(fps=1, max_frames=64))
    ours = runtime.encode([Request(images=(), video=media.clip, messages=question("What happens?", video=True))])

    processor = AutoProcessor.from_pretrained(tiny_model)
    container = av.open(str(clip_path))
    every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    container.close()
    indices = [5, 15, 25, 35]
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    meta = VideoMetadata(total_num_frames=40, fps=10, duration=4.0, width=64, height=48, video_backend="pyav",
                         frames_indices=indices)
    ref = processor(text=[prompt], videos=[np.stack([every[i] for i in indices])], video_metadata=[meta],
                    do_sample_frames=False, return_tensors="pt")
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    frames = ours["pixels"][0].pixel_values  # in the model's dtype, as the vision tower casts them
    assert torch.equal(frames, ref["pixel_values"][0].to(frames.dtype))
    assert torch.equal(ours["pixels"][0].pixel_attention_mask, ref["pixel_attention_mask"][0])
    text = processor.tokenizer.decode(ours["input_ids"][0])
    assert "You are provided the following series of four frames from a 0:00:04 [H:MM:SS] video." in text
    assert [f"Frame from 00:0{s}:" in text for s in range(4)] == [True] * 4


def test_frames_are_kept_at_the_processors_size_and_the_source_keeps_the_videos(tmp_path, tiny_model):
    """A field run: 64 frames of a 70 s 4K phone video were kept full size (24 MB each) and
    `process` peaked at 6.2 GB; the processor shrinks every frame to its own edge anyway."""
    path = make_clip(tmp_path / "wide.mp4", seconds=2, fps=5, size=(640, 360))
    media = load(path, sampling=Sampling(fps=1, max_frames=4, edge=64))
    assert [img.size for img in media.images] == [(64, 36)] * 2
    assert (media.info.width, media.info.height) == (640, 360)  # the video's own size, not the frames'
    red = [np.asarray(img)[20:, :, 0].mean() for img in media.images]  # the second is still there
    assert red[0] < 10 and 50 < red[1] < 70, red
    rotated = load(make_clip(tmp_path / "rot.mp4", seconds=1, size=(640, 480), rotation=90),
                   sampling=Sampling(fps=1, max_frames=4, edge=64))
    assert rotated.images[0].size == (48, 64) and (rotated.info.width, rotated.info.height) == (480, 640)
    assert load(path, sampling=Sampling(fps=1, max_frames=4)).images[0].size == (640, 360)  # no edge: as decoded
    runtime = Runtime(TransformersModel(path=tiny_model, threads=1))
    assert runtime.video_sampling() == {"fps": 1, "max_frames": 64, "edge": 64}  # the tiny processor's video size


def test_rotation_metadata_gives_upright_frames(tmp_path):
    path = make_clip(tmp_path / "rot.mp4", seconds=1, rotation=90)
    media = load(path, sampling=Sampling(fps=1, max_frames=4))
    frame = np.asarray(media.images[0])
    assert frame.shape[:2] == (64, 48)  # 64x48 stored, displayed rotated a quarter turn
    assert media.info.width == 48 and media.info.height == 64
    assert frame[-4:, :4].mean() > 200  # the top-left marker turns to bottom-left (counter-clockwise)


def test_bad_videos_give_clear_errors(tmp_path, clip_path):
    data = clip_path.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match="not a readable video|corrupt or truncated video|no decodable frames") as bad:
        load(tmp_path / "trunc.mp4")
    assert "Errno" not in bad.value.reason and "'" not in bad.value.reason, bad.value.reason  # FFmpeg's words only
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])  # cut inside the index: the container will not open
    with pytest.raises(MediaError) as bad:
        load(tmp_path / "half.mp4")
    said = "Invalid data found when processing input"
    assert bad.value.reason in (f"not a readable video: {said}", f"corrupt or truncated video: {said}"), bad.value
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 64 + b"certainly not a video")
    with pytest.raises(MediaError, match="not a supported image or video"):
        load(tmp_path / "fake.mp4")
    audio = tmp_path / "audio.mp4"
    out = av.open(str(audio), "w")
    stream = out.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for _ in range(10):
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    with pytest.raises(MediaError, match=r"no video stream \(the file holds audio\)"):
        load(audio)


def test_process_clip_writes_a_video_sidecar(clip_path, tmp_path, tiny_model, run_cli, monkeypatch):
    from smolvlm_watch_plugins.tags import Tags

    monkeypatch.setattr(Tags, "media_kinds", frozenset({"image"}))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_path.read_bytes())
    code, out, err = run_cli("process", clip, "--model", tiny_model, "--task", "caption", "--task", "ocr",
                             "--task", "tags", "--json")
    assert code == 0, out + err
    doc = read_sidecar(clip)
    src = doc["source"]
    assert src["kind"] == "video" and src["codec"] == "mpeg4"
    assert (src["duration"], src["fps"], src["frame_count"], src["width"], src["height"]) == (4.0, 10.0, 40, 64, 48)
    assert doc["video"] == {"sampled_timestamps": [0.5, 1.5, 2.5, 3.5],
                            "sampling": {"fps": 1, "max_frames": 64, "mode": "accurate", "skip_black": True}}
    assert isinstance(doc["tasks"]["caption"]["result"], str)
    assert doc["tasks"]["tags"] == {"skipped": "task 'tags' does not accept video files",
                                    "plugin": "smolvlm_watch_plugins.tags", "plugin_version": "1"}
    ocr = doc["tasks"]["ocr"]["result"]
    assert isinstance(ocr, list) and all(set(i) == {"timestamp", "text"} for i in ocr)
    txt = (tmp_path / "clip.mp4.txt").read_text()
    assert txt.splitlines()[0].startswith("[00:00] ") if ocr else txt == ""


def test_long_clip_sampling_memory_is_bounded(tmp_path):
    """20 minutes at 320x240: decoding it all would take ~550 MB; sampling holds 16 frames."""
    path = make_clip(tmp_path / "long.mp4", seconds=20 * 60, fps=2, size=(320, 240), gop=60)
    script = f"""
import resource, json
from smolvlm_watch.media.video import Sampling, decode
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clip = decode({str(path)!r}, Sampling(fps=1, max_frames=16))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"frames": len(clip.frames), "grew_mb": (after - before) / 1024, "duration": clip.duration}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == 16 and result["duration"] == 1200.0
    assert result["grew_mb"] < 60, result  # the bound: 60 MB over the interpreter's baseline


def test_daemon_writes_a_video_sidecar(clip_path, tmp_path, tiny_model):

    d = InProcess(daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]"))
    try:
        clip = tmp_path / "inbox" / "phone.mov"
        clip.write_bytes(clip_path.read_bytes())
        d.wait_done([clip])
    finally:
        d.stop()
    doc = read_sidecar(clip)
    assert doc["source"]["kind"] == "video" and doc["video"]["sampled_timestamps"] == [0.5, 1.5, 2.5, 3.5]
    assert (tmp_path / "inbox" / "phone.mov.txt").exists()


def test_a_task_can_have_its_own_sampling(clip_path, tmp_path, tiny_model, run_cli, write_config):
    clip = tmp_path / "inbox" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(clip_path.read_bytes())
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
video: {{fps: 1}}
tasks:
  caption: {{max_new_tokens: 4, video: {{fps: 0.5}}}}
  ocr: {{max_new_tokens: 4}}
watches: [{{path: ./inbox, tasks: [caption, ocr], outputs: [json], video: {{max_frames: 3}}}}]
""")
    code, out, err = run_cli("process", clip, "-c", cfg, "--json")
    assert code == 0, out + err
    doc = read_sidecar(clip)
    # 1 fps, at most 3: the frames at or after 0.667, 2, 3.333
    assert doc["video"]["sampled_timestamps"] == [0.7, 2.0, 3.4]
    assert doc["tasks"]["caption"]["video"]["sampled_timestamps"] == [1.0, 3.0]  # caption's own: 0.5 fps
    assert "video" not in doc["tasks"]["ocr"]
    assert len(doc["tasks"]["ocr"]["result"]) <= 3


def test_a_frame_at_a_timestamp_for_previews(clip_path):
    """The web page's video preview: the frame at the hit's time (red encodes the second)."""
    from smolvlm_watch.media import open_media

    with open_media(clip_path) as opened:
        frame = opened.frame(2.5)
        late = opened.frame(99.0)  # past the end: the last frame
    assert frame.size == (64, 48) and abs(frame.getpixel((40, 30))[0] - 120) <= 12
    assert abs(late.getpixel((40, 30))[0] - 180) <= 12
