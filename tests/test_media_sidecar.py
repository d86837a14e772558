"""Media decoding edge cases, atomic writes and byte-exact Unicode sidecars."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from helpers import make_image, read_sidecar
from smolvlm_watch.media import Limits, MediaError, load, open_media
from smolvlm_watch.atomic import atomic_write


def test_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    media = load(path)
    assert media.images[0].mode == "RGB" and media.images[0].getpixel((0, 0)) == (255, 255, 255)


def test_gif_first_frame_and_tiff_and_bmp(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    make_image(tmp_path / "b.tif", (12, 9), fmt="TIFF")
    make_image(tmp_path / "c.bmp", (7, 5), fmt="BMP")
    assert load(tmp_path / "a.gif").info.width == 10
    assert (load(tmp_path / "b.tif").info.width, load(tmp_path / "c.bmp").info.height) == (12, 5)


def test_pixel_limit_guards_against_bombs(tmp_path):
    path = make_image(tmp_path / "big.png", (500, 500))
    with pytest.raises(MediaError, match=r"500x500 = 250000 pixels, over the media.max_pixels limit of 1000"):
        load(path, Limits(max_pixels=1000))


def test_media_max_pixels_is_the_one_limit_even_past_pillows_own_guard(tmp_path):
    """Pillow refuses anything over ~179 MP at open whatever media.max_pixels says: a 200 MP
    panorama stayed refused after the user raised the key, the error naming Pillow's limit."""
    pano = tmp_path / "pano.png"
    Image.new("1", (20000, 10000)).save(pano)  # 200 MP in a few kilobytes
    with open_media(pano, Limits(max_pixels=300_000_000)) as opened:
        assert (opened.kind, opened.format) == ("image", "PNG")
    with pytest.raises(MediaError) as refused:
        open_media(pano, Limits())
    assert refused.value.reason == ("image is 20000x10000 = 200000000 pixels, over the media.max_pixels limit of "
                                    "100000000 (raise it in the config if this is intended)")


def test_truncated_and_wrong_content(tmp_path):
    path = make_image(tmp_path / "full.jpg", (200, 200), fmt="JPEG")
    data = path.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match="corrupt or truncated image"):
        load(tmp_path / "trunc.jpg")
    (tmp_path / "text.png").write_text("hello, I am text")
    with pytest.raises(MediaError, match="not a supported image"):
        load(tmp_path / "text.png")
    with pytest.raises(MediaError, match="vanished"):
        load(tmp_path / "gone.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path):
    path = make_image(tmp_path / "locked.png")
    path.chmod(0)
    with pytest.raises(MediaError, match="permission denied"):
        load(path)


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write(target, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_unicode_results_round_trip_byte_identical(tmp_path, tiny_model, run_cli, monkeypatch):
    from smolvlm_watch_plugins.ocr import Ocr

    text = "Счёт № 42 — оплачено ✅\nвторая строка 🐈‍⬛\n\nконец"
    monkeypatch.setattr(Ocr, "parse", lambda self, answers, spec, media: text)
    img = make_image(tmp_path / "scan.png")
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "ocr", "--json")
    assert code == 0
    assert (tmp_path / "scan.png.txt").read_bytes() == text.encode("utf-8")
    raw = (tmp_path / "scan.png.smolvlm.json").read_bytes()
    assert "Счёт № 42".encode() in raw  # stored as UTF-8, not \\u escapes
    assert json.loads(raw.decode("utf-8"))["tasks"]["ocr"]["result"] == text
    assert read_sidecar(img)["tasks"]["ocr"]["result"].encode("utf-8") == text.encode("utf-8")
