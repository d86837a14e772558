"""The remote backend against a REAL OpenAI-compatible server: `transformers serve` on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers import make_image, read_sidecar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve` serving the tiny model from its local folder on 127.0.0.1."""

    def __init__(self, model: Path, home: Path):
        self.model, self.home, self.port = model, home, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> None:
        exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(self.home), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([exe, "serve", str(self.model), "--host", "127.0.0.1", "--port",
                                      str(self.port), "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if wait:
            self.wait()

    def wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("transformers serve did not come up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    if shutil.which("transformers", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("transformers[serving] is not installed (it is in the test extras)")
    s = Server(tiny_model, tmp_path_factory.mktemp("hf-home"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SMOLVLM_TEST_KEY", "sk-test-secret-123")


def remote_config(tmp_path: Path, server: Server, name: str, extra: str = "") -> Path:
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
    code, out, err = run_cli("process", tmp_path / "remote", "-c", remote_config(tmp_path, server, str(tiny_model)),
                             "--json")
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


def test_server_going_away_mid_run_is_retried_until_it_is_back(tmp_path, tiny_model, run_cli):
    if shutil.which("transformers", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("transformers[serving] is not installed")
    server = Server(tiny_model, tmp_path / "hf")
    server.start()
    try:
        first = make_image(tmp_path / "remote" / "a.png", color=(1, 2, 3))
        cfg = remote_config(tmp_path, server, str(tiny_model))
        code, out, _ = run_cli("process", first, "-c", cfg, "--json")
        assert code == 0, out
        server.stop()
        later = make_image(tmp_path / "remote" / "b.png", color=(200, 2, 3))
        threading.Timer(2.0, server.start, kwargs={"wait": False}).start()
        start = time.monotonic()
        code, out, _ = run_cli("process", later, "-c", cfg, "--json")
        assert code == 0, out
        assert time.monotonic() - start > 2.0  # it had to wait for the server to come back
        assert "result" in read_sidecar(later)["tasks"]["ocr"]
    finally:
        server.stop()


def test_missing_api_key_variable_is_a_clear_error(tmp_path, server, run_cli, monkeypatch):
    monkeypatch.delenv("SMOLVLM_TEST_KEY", raising=False)
    make_image(tmp_path / "remote" / "k.png")
    code, _, err = run_cli("process", tmp_path / "remote", "-c", remote_config(tmp_path, server, "m"))
    assert code == 1 and "model.api_key_env names $SMOLVLM_TEST_KEY, which is not set" in err


def test_openai_backend_config_needs_url_and_name(write_config, run_cli):
    code, _, err = run_cli("config", "check", write_config("model: {backend: openai}\n"))
    assert code == 2
    assert "model.base_url: missing: model.backend openai needs base_url and name" in err
