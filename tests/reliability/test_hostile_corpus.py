"""The hostile corpus: every kind of bad input a library or an inbox holds, generated here, through
a real daemon process. Each one ends in a clear recorded error (or is processed, if it is a good
file in disguise); the daemon never crashes, never hangs, and processes every good file. Plus a
fuzz of the decoders over mutated bytes (issue 20)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from helpers import daemon_config, journal_states, make_image, spawn, wait_for
from smolvlm_watch.journal import Journal
from smolvlm_watch.media import Limits, MediaError, open_media
from smolvlm_watch.media.video import Sampling

GOOD = "good"  # must be done
BAD = "bad"  # must be failed (or quarantined) with a reason


def _png(size=(40, 30), mode="RGB", color=(10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 0).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size=(40, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG", **save)
    return buf.getvalue()


def _clip(path: Path, audio_only: bool = False) -> Path:
    out = av.open(str(path), "w")
    if audio_only:
        stream = out.add_stream("mp2", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for _ in range(10):
            for packet in stream.encode(frame):
                out.mux(packet)
    else:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def _pdf(path: Path, pages: int = 2) -> Path:
    images = [Image.new("RGB", (200, 280), (255, 255, 255)) for _ in range(pages)]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:])
    return path


def _corpus(inbox: Path, outside: Path) -> dict[Path, str]:
    """Every input and what must become of it."""
    rng = random.Random(7)
    c: dict[Path, str] = {}

    def put(name: str, data: bytes, expect: str) -> Path:
        path = inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        c[path] = expect
        return path

    png, jpg = _png(), _jpeg()
    put("truncated.jpg", _jpeg((300, 300))[:500], BAD)
    put("truncated.png", _png((300, 300))[:200], BAD)
    put("empty.png", b"", BAD)
    put("random.jpg", rng.randbytes(5000), BAD)
    put("random.png", rng.randbytes(64), BAD)
    put("png-called.jpg", png, GOOD)
    put("jpeg-called.png", jpg, GOOD)
    put("text-called.webp", b"hello, I am a text file\n" * 20, BAD)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    put("bomb.png", bomb.getvalue(), BAD)
    declared = bytearray(_png((8, 8)))
    declared[16:24] = (30000).to_bytes(4, "big") * 2  # IHDR says 30000x30000, the data is 8x8
    put("declared-30000.png", bytes(declared), BAD)
    tiff = io.BytesIO()
    Image.new("L", (30, 30)).save(tiff, "TIFF", save_all=True,
                                  append_images=[Image.new("1", (15000, 15000)), Image.new("L", (30, 30))],
                                  compression="tiff_deflate")
    put("bomb-page.tif", tiff.getvalue(), BAD)
    gif = io.BytesIO()
    frames = [Image.new("P", (20, 20), i) for i in (1, 2, 3)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], loop=0)
    put("animated.gif", gif.getvalue(), GOOD)
    cmyk = io.BytesIO()
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(cmyk, "JPEG")
    put("cmyk.jpg", cmyk.getvalue(), GOOD)
    sixteen = io.BytesIO()
    Image.new("I;16", (30, 20), 40000).save(sixteen, "PNG")
    put("16-bit.png", sixteen.getvalue(), GOOD)
    palette = Image.new("P", (30, 20), 1)
    palette.info["transparency"] = 1
    pal = io.BytesIO()
    palette.save(pal, "PNG", transparency=1)
    put("palette-alpha.png", pal.getvalue(), GOOD)
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription, a huge one
    put("huge-exif.jpg", _jpeg(exif=exif.tobytes()), GOOD)
    put("broken.mp4", b"\x00\x00\x00\x18ftypisom" + rng.randbytes(3000), BAD)
    audio = _clip(inbox / "audio-only.mkv", audio_only=True)
    c[audio] = BAD
    clip = _clip(inbox / "good.mp4")
    c[clip] = GOOD
    whole = clip.read_bytes()
    put("truncated.mp4", whole[:len(whole) // 2], BAD)  # the index (moov) is at the end: gone
    pdf = _pdf(inbox / "good.pdf")
    c[pdf] = GOOD
    put("truncated.pdf", pdf.read_bytes()[:300], BAD)
    put("no-pages.pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>"
                        b"endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n", BAD)
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(pdf))
    writer.encrypt("secret")
    locked = io.BytesIO()
    writer.write(locked)
    put("encrypted.pdf", locked.getvalue(), BAD)
    for name in ("with space.png", "new\nline.png", "quote'\"s.png", "-leading-dash.png", "кошка.png"):
        put(name, png, GOOD)
    c[Path(os.fsdecode(os.fsencode(inbox) + b"/latin1-\xe9.png"))] = GOOD
    Path(os.fsdecode(os.fsencode(inbox) + b"/latin1-\xe9.png")).write_bytes(png)
    put("y" * 246 + ".png", png, BAD)  # its sidecar name would be 263 bytes
    (inbox / "link-out.png").symlink_to(make_image(outside / "secret.png"))
    (inbox / "loop-a.png").symlink_to(inbox / "loop-b.png")
    (inbox / "loop-b.png").symlink_to(inbox / "loop-a.png")
    os.mkfifo(inbox / "fifo.png")
    with open(inbox / "sparse-4gib.jpg", "wb") as f:
        f.truncate(4 * 1024**3)
    c[inbox / "sparse-4gib.jpg"] = BAD
    put("foreign/x.png", png, BAD)
    (inbox / "foreign" / "x.png.smolvlm.json").write_text('{"my": "own file"}')
    locked_dir = inbox / "immutable"
    put("immutable/photo.png", png, BAD)
    if subprocess.run(["chattr", "+i", str(locked_dir)], capture_output=True).returncode != 0:
        del c[locked_dir / "photo.png"]  # no chattr here (not ext4, not root): left out, not faked
    return c


def test_hostile_corpus_through_a_real_daemon(tmp_path, tiny_model, record_property):
    inbox = tmp_path / "inbox"
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]")
    cfg.write_text(cfg.read_text().replace("max_attempts: 3}", "max_attempts: 2, item_timeout: 60}")
                   + "media: {max_bytes: 5000000000}\n")
    corpus = _corpus(inbox, tmp_path / "outside")
    db = tmp_path / "state" / "journal.sqlite"
    proc = spawn(cfg)
    settled = ("done", "failed", "quarantined")
    try:
        def states() -> dict[str, str]:
            return journal_states(db)

        try:
            wait_for(lambda: all(states().get(str(p)) in settled for p in corpus), 180, what="every input settled")
            hangs = 0
        except AssertionError:
            hangs = sum(states().get(str(p)) not in settled for p in corpus)
        alive = proc.poll() is None
    finally:
        subprocess.run(["chattr", "-i", str(inbox / "immutable")], capture_output=True)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    j = Journal(db, readonly=True)
    jobs = {job.path: job for job in j.all()}
    scan = json.loads(j.meta(f"scan:{inbox}") or "{}")
    j.close()
    events = [json.loads(line) for line in out.splitlines()]
    internal = [e for e in events if e["event"] in ("file_crashed", "job_crashed", "batch_crashed")]
    crashes = (not alive) + (proc.returncode != 0) + len(internal)
    unprocessed_good = [p.name for p, want in corpus.items() if want == GOOD and jobs[str(p)].state != "done"]
    silent_bad = [p.name for p, want in corpus.items() if want == BAD
                  and (jobs[str(p)].state == "done" or not jobs[str(p)].last_error)]
    line = (f"inputs tried {len(corpus) + 4}, crashes {crashes}, hangs {hangs}, "
            f"unprocessed-good {len(unprocessed_good)}")
    record_property("harness", f"hostile corpus: {line}")
    print(line)
    assert (crashes, hangs, unprocessed_good, silent_bad) == (0, 0, [], []), (line, internal, silent_bad)
    assert scan["skipped"] == {"a symlink to a file outside the watch": 1, "a symlink loop": 2,
                               "not regular files (a FIFO, socket or device under a media name)": 1}
    assert str(inbox / "link-out.png") not in jobs and str(inbox / "fifo.png") not in jobs
    for path, want in corpus.items():
        if want == BAD:
            assert jobs[str(path)].attempts <= 2, (path.name, jobs[str(path)])


# --- fuzzing the decoders ------------------------------------------------------------------------

def _seeds() -> list[bytes]:
    gif = io.BytesIO()
    Image.new("P", (8, 8), 3).save(gif, "GIF")
    tif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tif, "TIFF")
    webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(webp, "WEBP")
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, "BMP")
    pdf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(pdf, "PDF")
    return [_png((8, 8)), _jpeg((8, 8)), gif.getvalue(), tif.getvalue(), webp.getvalue(), bmp.getvalue(),
            pdf.getvalue()]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(1, len(data)))]
    return bytes(data)


def _decode(path: Path) -> None:
    limits = Limits(max_pixels=4_000_000, max_page_pixels=4_000_000, dpi=72)
    with open_media(path, limits) as opened:
        if opened.kind == "image":
            opened.image(limits)
        elif opened.kind == "video":
            opened.video(Sampling(fps=1, max_frames=2, timeout=5))
        else:
            doc = opened.document(limits)
            try:
                for i in range(min(doc.page_count, 3)):
                    try:
                        doc.page(i)
                    except MediaError:
                        continue  # one page may fail while the others are read
            finally:
                doc.close()


def _fuzz(tmp_path: Path, examples: int, record_property) -> None:
    stats = {"tried": 0, "slow": 0}
    path = tmp_path / "fuzzed"

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def decode_or_refuse(data: bytes) -> None:
        stats["tried"] += 1
        path.write_bytes(data)
        start = time.monotonic()
        try:
            _decode(path)
        except MediaError:
            pass  # a clear refusal is the right answer; anything else fails the test (a crash)
        stats["slow"] += time.monotonic() - start > 5.0

    decode_or_refuse()
    line = f"inputs tried {stats['tried']}, crashes 0, hangs {stats['slow']}"
    record_property("harness", f"decoder fuzz: {line}")
    assert stats["slow"] == 0, line


def test_fuzzed_bytes_are_decoded_or_refused_never_a_crash(tmp_path, record_property):
    _fuzz(tmp_path, 300, record_property)


@pytest.mark.long
def test_fuzzed_bytes_long(tmp_path, record_property):
    _fuzz(tmp_path, 3000, record_property)
