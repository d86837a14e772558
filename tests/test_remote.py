"""The remote backend against a REAL OpenAI-compatible server: `transformers serve` on loopback."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from helpers import make_image, read_sidecar
from smolvlm_watch.testing import ModelServer


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    if ModelServer.executable() is None:
        pytest.skip("transformers[serving] is not installed (it is in the test extras)")
    s = ModelServer(tiny_model, tmp_path_factory.mktemp("hf-home"), threads=1)
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SMOLVLM_TEST_KEY", "sk-test-secret-123")


def remote_config(tmp_path: Path, server: ModelServer, name: str, extra: str = "") -> Path:
    cfg = tmp_path / "remote.yaml"
    cfg.write_text(f"""
model: {{backend: openai, base_url: "{server.url}", name: "{name}", api_key_env: SMOLVLM_TEST_KEY,
         timeout: 30, concurrency: 3}}
tasks: {{ocr: {{max_new_tokens: 12, options: {{loop_guard: false}}}}}}
watches: [{{path: ./remote, tasks: [ocr], outputs: [json]}}]
{extra}""")
    return cfg


def test_remote_and_in_process_give_the_same_greedy_text(tmp_path, server, tiny_model, run_cli):
    images = [make_image(tmp_path / "remote" / f"r{i}.png", (160, 120), (40 * i, 90, 200)) for i in range(3)]
    cfg = remote_config(tmp_path, server, str(tiny_model))  # PNG: the very pixels, for a bit-exact comparison
    cfg.write_text(cfg.read_text().replace("concurrency: 3}", "concurrency: 3, image_format: png}"))
    code, out, err = run_cli("process", tmp_path / "remote", "-c", cfg, "--json")
    assert code == 0, out + err
    local = tmp_path / "local.yaml"
    local.write_text(f"""
model: {{path: {tiny_model}, dtype: float32}}
tasks: {{ocr: {{max_new_tokens: 12, options: {{loop_guard: false}}}}}}
watches: [{{path: ./local, tasks: [ocr], outputs: [json]}}]
""")
    for img in images:
        make_image(tmp_path / "local" / img.name, (160, 120), pixel(img))
    code, out, err = run_cli("process", tmp_path / "local", "-c", local, "--json")
    assert code == 0, out + err
    for img in images:
        remote_doc, local_doc = read_sidecar(img), read_sidecar(tmp_path / "local" / img.name)
        assert remote_doc["tasks"]["ocr"]["raw"] == local_doc["tasks"]["ocr"]["raw"]
        assert remote_doc["tasks"]["ocr"]["tokens"] == 12
        assert remote_doc["model"] == {"id": str(tiny_model), "revision": None, "dtype": None, "device": None,
                                       "backend": "openai", "endpoint": server.url}
        assert "sk-test-secret-123" not in img.with_name(img.name + ".smolvlm.json").read_text()


def test_one_tile_answers_match_in_process_through_a_server_that_tiles_once(tmp_path, tiny_model, run_cli):
    """Caption at one tile, remote and in-process, the same greedy text. A generic server cannot
    be told per request (vLLM can, and none is available here), so this server's own processor
    takes one tile. Photos: a PNG, and a JPEG that goes as its own stream."""
    from smolvlm_watch import fixtures

    one = tmp_path / "one-tile"
    shutil.copytree(tiny_model, one)
    processor = json.loads((one / "processor_config.json").read_text())
    processor["image_processor"]["do_image_splitting"] = False
    (one / "processor_config.json").write_text(json.dumps(processor))
    photos = [make_image(tmp_path / "remote" / "a.png", (200, 150), (30, 140, 220)),
              fixtures.camera_jpeg(tmp_path / "remote" / "b.jpg", (240, 180), seed=4)]
    task = "tasks: {caption: {max_new_tokens: 10, image_splitting: false, options: {loop_guard: false}}}"
    server = ModelServer(one, tmp_path / "hf-home", threads=1)
    server.start()
    try:
        cfg = tmp_path / "remote.yaml"
        cfg.write_text(f'model: {{backend: openai, base_url: "{server.url}", name: "{one}", image_format: png}}\n'
                       f"{task}\nwatches: [{{path: ./remote, tasks: [caption], outputs: [json]}}]\n")
        code, out, err = run_cli("process", tmp_path / "remote", "-c", cfg, "--json")
        assert code == 0, out + err
    finally:
        server.stop()
    (tmp_path / "local").mkdir()
    for photo in photos:
        shutil.copy(photo, tmp_path / "local" / photo.name)
    local = tmp_path / "local.yaml"
    local.write_text(f"model: {{path: {tiny_model}, dtype: float32}}\n{task}\n"
                     "watches: [{path: ./local, tasks: [caption], outputs: [json]}]\n")
    code, out, err = run_cli("process", tmp_path / "local", "-c", local, "--json")
    assert code == 0, out + err
    for photo in photos:
        remote_doc, local_doc = read_sidecar(photo), read_sidecar(tmp_path / "local" / photo.name)
        assert remote_doc["tasks"]["caption"]["raw"] == local_doc["tasks"]["caption"]["raw"], photo.name
        assert remote_doc["tasks"]["caption"]["tokens"] == 10


def pixel(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.getpixel((0, 0))


def test_wrong_model_name_gives_a_clear_error(tmp_path, server, run_cli):
    make_image(tmp_path / "remote" / "x.png")
    code, out, _ = run_cli("process", tmp_path / "remote", "-c", remote_config(tmp_path, server, "no-such-model"),
                           "--json")
    assert code == 1
    error = json.loads(out)["failed"][0]["error"]
    assert "remote model 'no-such-model' at " + server.url + " refused the request (HTTP 400)" in error
    assert "requested 'no-such-model'" in error


def test_server_going_away_mid_run_is_retried_until_it_is_back(tmp_path, run_cli):
    """The client's side of an outage (connection refused, then the server back on its port);
    the real `transformers serve` answering is what the tests above check."""
    from smolvlm_watch.testing import InstantServer

    with InstantServer() as server:
        first = make_image(tmp_path / "photos" / "a.png", color=(1, 2, 3))
        cfg = _instant_config(tmp_path, server.url)
        code, out, _ = run_cli("process", first, "-c", cfg, "--json")
        assert code == 0, out
    back = InstantServer(port=server.httpd.server_address[1])
    later = make_image(tmp_path / "photos" / "b.png", color=(200, 2, 3))
    timer = threading.Timer(2.0, back.__enter__)
    timer.start()
    start = time.monotonic()
    try:
        code, out, _ = run_cli("process", later, "-c", cfg, "--json")
    finally:
        timer.join()  # started, so that it can be shut down
        back.__exit__()
    assert code == 0, out
    assert time.monotonic() - start > 2.0  # it had to wait for the server to come back
    assert "result" in read_sidecar(later)["tasks"]["ocr"] and back.requests


def test_missing_api_key_variable_is_a_clear_error(tmp_path, server, run_cli, monkeypatch):
    monkeypatch.delenv("SMOLVLM_TEST_KEY", raising=False)
    make_image(tmp_path / "remote" / "k.png")
    code, _, err = run_cli("process", tmp_path / "remote", "-c", remote_config(tmp_path, server, "m"))
    assert code == 1 and "model.api_key_env names $SMOLVLM_TEST_KEY, which is not set" in err


def test_openai_backend_config_needs_url_and_name(write_config, run_cli):
    code, _, err = run_cli("config", "check", write_config("model: {backend: openai}\n"))
    assert code == 2
    assert "model.base_url: missing: model.backend openai needs base_url and name" in err


def _instant_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    cfg = tmp_path / "instant.yaml"
    cfg.write_text(f"""
model: {{backend: openai, base_url: "{url}", name: instant{extra}}}
watches: [{{path: ./photos, tasks: [caption, tags, ocr], outputs: [json]}}]
""")
    return cfg


def _sent_images(request: dict) -> list[str]:
    return [part["image_url"]["url"] for m in request["json"]["messages"] for part in m["content"]
            if part["type"] == "image_url"]


def test_a_camera_photo_is_sent_once_encoded_at_the_size_the_model_looks_at(tmp_path, run_cli, monkeypatch):
    """24 MP: resized on the client as SmolVLM's processor resizes (2048 px, even side), JPEG
    quality 95 4:4:4, the same bytes for all three questions, encoded once."""
    import base64
    import io

    from PIL import Image

    from smolvlm_watch import fixtures, remote
    from smolvlm_watch.testing import InstantServer

    photo = fixtures.camera_jpeg(tmp_path / "photos" / "camera.jpg", fixtures.CAMERA)
    encodes: list[tuple[int, int]] = []
    real = remote.data_url
    monkeypatch.setattr(remote, "data_url", lambda img, fmt="jpeg": encodes.append(img.size) or real(img, fmt))
    with InstantServer() as server:
        code, out, err = run_cli("process", photo, "-c", _instant_config(tmp_path, server.url), "--json")
        assert code == 0, out + err
        urls = [u for r in server.requests for u in _sent_images(r)]
    assert len(server.requests) == 3 and len(set(urls)) == 1 and encodes == [(2048, 1366)]
    assert urls[0].startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert sent.size == (2048, 1366) and sent.format == "JPEG"
    assert max(r["bytes"] for r in server.requests) < 2_500_000  # a 24 MP PNG was ~50 MB of base64
    for r in server.requests:
        assert "mm_processor_kwargs" not in r["json"]  # not a vLLM server
    doc = read_sidecar(photo)
    # caption and tags ask for one tile, which this server does not take per request: recorded as applied
    assert doc["tasks"]["caption"]["generation"]["image"] == {"longest_edge": 2048, "max_image_size": None,
                                                              "splitting": None}
    assert doc["tasks"]["ocr"]["generation"]["image"] == {"longest_edge": None, "max_image_size": None,
                                                          "splitting": None}


def test_a_vllm_server_gets_the_tasks_own_image_settings(tmp_path, run_cli):
    from PIL import Image

    from smolvlm_watch import fixtures
    from smolvlm_watch.testing import InstantServer

    photo = tmp_path / "photos" / "small.png"
    photo.parent.mkdir()
    Image.open(fixtures.camera_jpeg(tmp_path / "small.jpg", (1024, 768))).save(photo)
    with InstantServer() as server:
        cfg = _instant_config(tmp_path, server.url, ", server: vllm, image_format: png")
        code, out, err = run_cli("process", photo, "-c", cfg, "--json")
        assert code == 0, out + err
        sent = {r["json"]["messages"][0]["content"][-1]["text"]: r["json"] for r in server.requests}
    kwargs = {prompt[:8]: body.get("mm_processor_kwargs") for prompt, body in sent.items()}
    assert kwargs == {"Describe": {"do_image_splitting": False}, "List key": {"do_image_splitting": False},
                      "Extract ": None}
    assert all(_sent_images({"json": body})[0].startswith("data:image/png;base64,") for body in sent.values())
    doc = read_sidecar(photo)
    assert doc["tasks"]["caption"]["generation"]["image"]["splitting"] is False  # applied as asked


def test_a_vllm_server_reads_a_videos_frames_at_their_own_tiles(tmp_path, run_cli):
    """OCR's question about each frame asks the server not to upscale it (``Request.frames``): a
    320x240 frame is read at 512 (one tile), not at a photo's 2048 (13 tiles of the same pixels)."""
    from smolvlm_watch import fixtures
    from smolvlm_watch.testing import InstantServer

    clip = fixtures.phone_video(tmp_path / "photos" / "clip.mp4")
    with InstantServer() as server:
        cfg = _instant_config(tmp_path, server.url, ", server: vllm")
        code, out, err = run_cli("process", clip, "-c", cfg, "--json")
        assert code == 0, out + err
        bodies = [r["json"] for r in server.requests]
    frames = [b for b in bodies if b["messages"][0]["content"][-1]["text"].startswith("Extract all text")]
    assert len(frames) == 2, bodies
    assert [b["mm_processor_kwargs"] for b in frames] == [{"size": {"longest_edge": 512}}] * 2
    assert [_decoded(u).size for b in frames for u in _sent_images({"json": b})] == [(320, 240)] * 2


def _decoded(url: str):
    import base64
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_a_jpeg_within_the_size_is_sent_as_its_own_stream_without_its_metadata(tmp_path, run_cli):
    """No re-encoding (no second loss, no CPU) for a phone-size JPEG that needs no turn; its EXIF,
    XMP and IPTC (GPS position, names) stay home. A turned one is sent upright, re-encoded."""
    import base64

    import numpy as np

    from smolvlm_watch import fixtures, media
    from smolvlm_watch.media.image import without_metadata
    from smolvlm_watch.testing import InstantServer

    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    plain = fixtures.camera_jpeg(tmp_path / "photos" / "plain.jpg", (1024, 768), keywords=["Oma"],
                                 description="at home", xmp=xmp)
    turned = fixtures.camera_jpeg(tmp_path / "photos" / "turned.jpg", (1024, 768), seed=3, orientation=6)
    with InstantServer() as server:
        code, out, err = run_cli("process", tmp_path / "photos", "-c", _instant_config(tmp_path, server.url), "--json")
        assert code == 0, out + err
        by_size = {_decoded(u).size: u for r in server.requests for u in _sent_images(r)}
    assert sorted(by_size) == [(768, 1024), (1024, 768)] and len(server.requests) == 6
    sent = base64.b64decode(by_size[(1024, 768)].split(",", 1)[1])
    data = plain.read_bytes()
    assert sent == without_metadata(data) and len(sent) < len(data)
    for secret in (b"Exif", b"xmpmeta", b"Photoshop 3.0", b"at home", b"Oma"):
        assert secret in data and secret not in sent
    ours = media.load(plain).images[0]
    assert np.array_equal(np.asarray(_decoded(by_size[(1024, 768)]).convert("RGB")), np.asarray(ours))
    upright = _decoded(by_size[(768, 1024)])
    assert upright.format == "JPEG" and not upright.getexif() and turned.read_bytes()[:2] == b"\xff\xd8"


def test_the_client_resizes_exactly_as_the_in_process_processor_does(tiny_model):
    """The server's resize is then a no-op: the pixels sent are the processor's own first step."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor
    from transformers.image_processing_utils import SizeDict

    from smolvlm_watch import fixtures
    from smolvlm_watch.remote import fitted

    processor = AutoImageProcessor.from_pretrained(tiny_model)
    for size in ((3000, 2000), (1500, 2250), (2049, 1000)):
        img = fixtures.scene(size, 5)
        ours = np.asarray(fitted(img, 2048))
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        theirs = processor.resize(pixels, SizeDict(longest_edge=2048), resample=processor.resample)
        assert np.array_equal(ours, theirs.permute(1, 2, 0).numpy()), size


def test_the_next_files_are_asked_while_an_earlier_answer_is_still_out(tmp_path, run_cli):
    """Requests of files prepared ahead go out before the batch before them has all its
    answers: the server holds the very first answer back until it has seen every photo. (A
    batch holds at most 4 files here, so without sending ahead at most 4 photos are seen.)"""
    import threading

    from smolvlm_watch import fixtures
    from smolvlm_watch.testing import InstantServer

    for i in range(6):
        fixtures.camera_jpeg(tmp_path / "photos" / f"p{i}.jpg", (320, 240), seed=i)
    seen: set[str] = set()
    all_seen, first, held = threading.Event(), threading.Lock(), []

    def hold(record: dict) -> None:
        seen.update(_sent_images(record))
        if len(seen) == 6:
            all_seen.set()
        if first.acquire(blocking=False):  # the first request waits for the others to arrive
            held.append(all_seen.wait(20))

    with InstantServer(before_answer=hold) as server:
        cfg = _instant_config(tmp_path, server.url, ", concurrency: 4")
        cfg.write_text(cfg.read_text() + "runtime: {prefetch: 6}\n")  # all six decoded ahead, however fast
        code, out, err = run_cli("process", tmp_path / "photos", "-c", cfg, "--json")
        assert code == 0, out + err
    assert held == [True] and len(server.requests) == 18
    assert all(read_sidecar(tmp_path / "photos" / f"p{i}.jpg")["tasks"]["ocr"]["result"] for i in range(6))


def test_config_check_says_which_task_settings_a_generic_server_ignores(write_config, run_cli, tmp_path):
    (tmp_path / "in").mkdir()  # no missing-folder warning after the notes
    base = ('model: {{backend: openai, base_url: "http://gpu:8000/v1", name: m{}}}\n'
            "watches: [{{path: ./in, tasks: [caption, ocr]}}]\n")
    code, out, _ = run_cli("config", "check", write_config(base.format(", server: generic")))
    assert code == 0
    assert out.splitlines()[-2:] == [
        "# note: this server applies its own tiling, not these tasks' image settings (the sidecar records what "
        "was applied):", "#   caption: image_splitting False, max_image_size None"]
    code, out, _ = run_cli("config", "check", write_config(base.format(", server: vllm")))
    assert "# note:" not in out


class Hostile:
    """An OpenAI-compatible stub that misbehaves as told: ``answer(n, body, headers)`` gives the
    n-th POST's (status, headers, body bytes, seconds between bytes); GET answers the model list."""

    def __init__(self, answer, port: int = 0):
        import http.server

        stub = self
        self.posts: list[float] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                stub.posts.append(time.monotonic())
                status, headers, payload, trickle = answer(len(stub.posts), body, dict(self.headers))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for i in range(0, len(payload), 1 if trickle else len(payload) or 1):
                        self.wfile.write(payload[i:i + (1 if trickle else len(payload))])
                        self.wfile.flush()
                        time.sleep(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                payload = b'{"object": "list", "data": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(text: str = "a red square") -> tuple[int, dict, bytes, float]:
    payload = {"choices": [{"message": {"content": text}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode(), 0


def _stub_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    cfg = tmp_path / "stub.yaml"
    cfg.write_text(f"""
model: {{backend: openai, base_url: "{url}", name: "m", api_key_env: SMOLVLM_TEST_KEY, timeout: 2,
         concurrency: 2}}
tasks: {{caption: {{max_new_tokens: 8}}}}
watches: [{{path: ./remote, tasks: [caption], outputs: [json]}}]
{extra}""")
    return cfg


def test_the_api_key_never_lands_in_anything_recorded(tmp_path, run_cli):
    """Issue 25, 10: a 401 whose body echoes our headers put `Bearer sk-…` in the sidecar."""
    stub = Hostile(lambda n, body, headers: (401, {}, json.dumps({"error": {"message": f"bad key, got {headers}"}})
                                             .encode(), 0))
    try:
        make_image(tmp_path / "remote" / "k.png")
        code, out, err = run_cli("process", tmp_path / "remote", "-c", _stub_config(tmp_path, stub.url), "--json")
    finally:
        stub.close()
    assert code == 1
    error = json.loads(out)["failed"][0]["error"]
    assert "refused the request (HTTP 401)" in error and "Bearer [redacted]" in error
    recorded = out + err + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
                                   and p.suffix in (".json", ".txt", ".log"))
    assert "sk-test-secret-123" not in recorded


@pytest.mark.parametrize("payload, why", [
    (b'{"choices": []}', "no text in the answer"),
    (b'{"choices": [{"message": {"content": null}}]}', "no text in the answer"),
    (b"<html><body>502 Bad Gateway</body></html>", "unusable answer: JSONDecodeError"),
    (b'{"choices": [{"message": {"content": "cut sho', "unusable answer: JSONDecodeError"),
    (b'{"choices": [{"message": {"content": "' + b"x" * 3_000_000 + b'"}}]}', "more than 8 tokens can need"),
])
def test_one_bad_answer_fails_only_its_own_file(tmp_path, run_cli, payload, why):
    """Issue 25, 11-12: an empty or unusable 200 answer is that file's failure (never `done` with
    an empty caption, never 50 MB stored), and the good file batched with it is done."""

    def answer(n, body, headers):
        import base64
        import io

        from PIL import Image

        url = body["messages"][0]["content"][0]["image_url"]["url"]
        red = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB").getpixel((0, 0))[0]
        return (200, {"Content-Type": "application/json"}, payload, 0) if red > 128 else ok()

    stub = Hostile(answer)
    try:
        bad = make_image(tmp_path / "remote" / "bad.png", color=(250, 0, 0))
        good = make_image(tmp_path / "remote" / "good.png", color=(0, 0, 250))
        code, out, _ = run_cli("process", tmp_path / "remote", "-c", _stub_config(tmp_path, stub.url), "--json")
    finally:
        stub.close()
    report = json.loads(out)
    assert code == 1 and report["done"] == [str(good)], out[:2000]
    assert [f["path"] for f in report["failed"]] == [str(bad)] and why in report["failed"][0]["error"]
    assert read_sidecar(good)["tasks"]["caption"]["result"] == "a red square"
    sidecar = bad.with_name(bad.name + ".smolvlm.json")
    assert not sidecar.exists() or sidecar.stat().st_size < 10_000


def test_retry_after_is_honoured_and_a_trickling_answer_meets_its_deadline(tmp_path, run_cli):
    """Issue 25, 13: a 429's Retry-After: 2 was retried after 0.8 s; a 200 sent a byte at a time
    never timed out (httpx's timeout is per read)."""

    def answer(n, body, headers):
        if n == 1:
            return 429, {"Retry-After": "2"}, b'{"error": "slow down"}', 0
        return ok() if n == 2 else (200, {}, ok()[2], 0.2)  # the second file's answer trickles

    stub = Hostile(answer)
    try:
        first = make_image(tmp_path / "remote" / "a.png")
        cfg = _stub_config(tmp_path, stub.url)
        code, out, _ = run_cli("process", first, "-c", cfg, "--json")
        assert code == 0, out
        assert stub.posts[1] - stub.posts[0] >= 1.9  # waited as asked, not 0.8 s
        second = make_image(tmp_path / "remote" / "b.png", color=(1, 2, 3))
        start = time.monotonic()
        code, out, _ = run_cli("process", second, "-c", cfg, "--json")
    finally:
        stub.close()
    assert code == 1 and time.monotonic() - start < 10  # model.timeout 2 s in all, not 0.2 s per byte
    assert "no complete answer within model.timeout (2 s)" in json.loads(out)["failed"][0]["error"]


def test_an_outage_pauses_the_queue_and_it_resumes_by_itself(tmp_path, monkeypatch, run_cli):
    """Issue 25, 9: with the server down each file spent 70-100 s per attempt and ended
    quarantined while status said "model loaded". Now the queue waits uncharged, says why, and
    goes on when the server answers again."""
    import socket

    from helpers import InProcess, wait_for
    from smolvlm_watch import engine, remote
    from smolvlm_watch.metrics import routes

    monkeypatch.setattr(remote, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(engine.Outage, "FIRST_WAIT", 0.2)
    monkeypatch.setattr(engine.Outage, "MAX_WAIT", 0.5)
    downs: list[str] = []  # the outage noticed, then each probe that failed
    noticed = engine.Outage.down
    monkeypatch.setattr(engine.Outage, "down", lambda self, error, *a, **k: (downs.append(error),
                                                                             noticed(self, error, *a, **k))[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there yet
    cfg = _stub_config(tmp_path, f"http://127.0.0.1:{port}/v1", "state: {db: ./state/j.sqlite, max_attempts: 2}\n")
    cfg.write_text(cfg.read_text().replace("outputs: [json]}", "outputs: [json], settle_seconds: 0.2}"))
    d = InProcess(cfg)
    stub = None
    try:
        photos = [make_image(tmp_path / "remote" / f"p{i}.png", color=(i, 9, 9)) for i in range(3)]
        wait_for(lambda: len(downs) >= 3, 20, what="the outage noticed and two probes failed")
        jobs = [d.journal.get(str(p)) for p in photos]
        assert all(j is not None and j.state == "pending" and j.attempts == 0 for j in jobs), jobs
        why = d.daemon.supervisor.trouble()
        assert why.startswith("model server unreachable since ") and f"cannot reach http://127.0.0.1:{port}" in why
        scrape = routes(d.daemon.metrics)
        assert scrape["/healthz"](None).status == 503
        assert b"smolvlm_watch_model_reachable 0.0" in scrape["/metrics"](None).body
        d.daemon.write_meta()
        code, out, _ = run_cli("status", "-c", cfg)
        assert "; model server unreachable since " in out.splitlines()[1], out
        stub = Hostile(lambda n, body, headers: ok(), port=port)
        d.wait_done(photos, timeout=20)
        assert {d.journal.get(str(p)).attempts for p in photos} == {0}
        assert d.daemon.supervisor.trouble() is None and scrape["/healthz"](None).status == 200
    finally:
        d.stop()
        if stub is not None:
            stub.close()
