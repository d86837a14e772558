"""Errors that say what happened and what to do, and secrets that stay secret (issue 20,
defects 15, 17 and 18)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from helpers import InProcess, daemon_config, journal_states, make_image, read_sidecar, spawn, wait_for
from smolvlm_watch.journal import Journal
from smolvlm_watch.testing import InstantServer
from zygote import cli_run


def test_credentials_in_base_url_are_used_but_never_recorded(tmp_path, run_cli, write_config):
    """Defect 15: `http://user:password@host/v1` was written into every sidecar, the log,
    `status`, `config check` and the journal."""
    with InstantServer("a red square") as server:
        url = server.url.replace("http://", "http://alice:s3cret@")
        cfg = write_config(f"""
model: {{backend: openai, base_url: "{url}", name: instant}}
watches:
  - path: ./inbox
    tasks: [caption]
    outputs: [json]
    settle_seconds: 0.3
state: {{db: ./state/journal.sqlite}}
logging: {{format: json}}
""")
        img = make_image(tmp_path / "inbox" / "one.png")
        code, out, err = run_cli("process", img, "-c", cfg, "--json")
        assert code == 0, out + err
        sent = server.requests[0]["headers"]["Authorization"]
        assert sent == "Basic " + base64.b64encode(b"alice:s3cret").decode()  # used ...
        proc = spawn(cfg)
        db = tmp_path / "state" / "journal.sqlite"
        try:
            two = make_image(tmp_path / "inbox" / "two.png")
            wait_for(lambda: journal_states(db).get(str(two)) == "done", 60, what="done by the daemon")
            code, status, _ = run_cli("status", "-c", cfg, "--json")
        finally:
            proc.terminate()
            logged, _ = proc.communicate(timeout=30)
        code, check, _ = run_cli("config", "check", cfg)
        journal = Journal(db, readonly=True)
        meta = journal.meta("daemon") or ""
        journal.close()
    doc = read_sidecar(img)
    assert doc["model"]["endpoint"] == server.url  # ... and never recorded
    for where, text in (("sidecar", json.dumps(doc)), ("journal", meta), ("status", status),
                        ("config check", check), ("log", logged)):
        assert "s3cret" not in text and "alice" not in text, where
    assert f"base_url: {server.url}" in check


def test_a_name_too_long_for_its_sidecar_fails_once_and_says_so(tmp_path, tiny_model):
    """Defect 17: a name of 250 bytes gives a 263-byte sidecar name; it was retried as
    "internal error: OSError: [Errno 36]" until quarantined."""
    cfg = daemon_config(tmp_path, tiny_model)
    long = make_image(tmp_path / "inbox" / ("x" * 246 + ".png"))
    d = InProcess(cfg)
    try:
        wait_for(lambda: d.state(long) == "failed", 20, what="the long name failed")
        ok = make_image(tmp_path / "inbox" / "short.png")
        d.wait_done([ok])
        job = d.journal.get(str(long))
    finally:
        d.stop()
    assert job.attempts == 1
    assert job.last_error.startswith("the sidecar name xxxx") and "would be 263 bytes" in job.last_error
    assert "over this file system's limit of 255: shorten the file's name" in job.last_error


def _tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _run(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_run([*args, "-c", str(cfg)], cfg.parent, timeout=120)


def test_read_only_and_unwritable_journals_get_their_own_fix(tmp_path, tiny_model):
    """Defect 17: a read-only journal gave a raw traceback, and an unwritable state folder got
    the advice "move it away", which would discard the journal."""
    state = tmp_path / "state"
    _tmpfs(state)
    try:
        cfg = daemon_config(tmp_path, tiny_model)
        Journal(state / "journal.sqlite").close()  # a journal the daemon wrote ...
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)  # ... now on a read-only disk
        proc = _run(cfg, "run")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "write access" in proc.stderr and "move it away" not in proc.stderr, proc.stderr
        assert _run(cfg, "status").returncode == 0  # looking needs no write access
        subprocess.run(["umount", str(state)], check=True)
        _tmpfs(state)
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)  # an empty, unwritable folder
        proc = _run(cfg, "run")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert str(state) in proc.stderr and "move it away" not in proc.stderr
        assert "write access" in proc.stderr or "not writable" in proc.stderr, proc.stderr
    finally:
        subprocess.run(["umount", str(state)], capture_output=True)


def test_a_decompression_bomb_is_called_one(tmp_path, tiny_model, run_cli):
    """Defect 17: a decompression-bomb refusal was labelled "corrupt or truncated image". Both
    files are refused by the one limit, media.max_pixels, before a pixel is decoded."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 megapixels in a few kilobytes
    big = tmp_path / "big.png"
    Image.new("1", (11000, 11000)).save(big)  # under Pillow's guard, over media.max_pixels
    code, out, _ = run_cli("process", bomb, big, "--model", tiny_model, "--task", "caption", "--json")
    errors = {Path(f["path"]).name: f["error"] for f in json.loads(out)["failed"]}
    assert errors["bomb.png"] == ("image is 20000x20000 = 400000000 pixels, over the media.max_pixels limit of "
                                  "100000000 (raise it in the config if this is intended)")
    assert errors["big.png"] == ("image is 11000x11000 = 121000000 pixels, over the media.max_pixels limit of "
                                 "100000000 (raise it in the config if this is intended)")


def test_sidecar_suffixes_that_would_hide_media_or_collide_are_refused(tmp_path, run_cli, write_config):
    """Defect 18: `json_suffix: .png` made every .png a "sidecar" (never processed), and an
    ocr_suffix equal to the JSON suffix was accepted."""
    cfg = write_config("outputs: {json_suffix: .png}\nwatches: [./photos]\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2 and "outputs.json_suffix: '.png' ends like a media file or an XMP sidecar (.png)" in err
    cfg = write_config("watches:\n  - {path: ./photos, ocr_suffix: .smolvlm.json}\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2 and "watches[0].ocr_suffix: '.smolvlm.json' is also outputs.json_suffix" in err


def test_a_model_that_cannot_load_stops_process_with_one_clear_error(tmp_path, run_cli):
    """`process` on a machine without the model (offline, not cached) failed every file with
    "internal error: ModelLoadError" and a traceback each, and exited 1 as if the files were
    at fault; `--model` with a missing folder said "HFValidationError: Repo id must be in the
    form ..." per file. The run stops at once with the one message that says what to do."""
    img = make_image(tmp_path / "inbox" / "one.png")
    code, out, err = run_cli("process", img, "--task", "caption", "--json")
    assert code == 1, out + err
    assert "cannot load model 'HuggingFaceTB/SmolVLM2-256M-Video-Instruct': offline mode is on" in err
    assert "Fix: point model.path at a local folder" in err
    assert "internal error" not in out + err and "Traceback" not in err and "file_crashed" not in err
    assert not (tmp_path / "inbox" / "one.png.smolvlm.json").exists()
    code, out, err = run_cli("process", img, "--model", str(tmp_path / "models" / "missing"), "--json")
    assert code == 2, out + err
    assert f"--model {tmp_path / 'models' / 'missing'}: no such folder (a Hugging Face Hub id is NAME or" in err
    code, out, err = run_cli("process", img, "--model", "not/a/hub/id", "--json")
    assert code == 2 and "--model not/a/hub/id: no such folder" in err
    code, out, err = run_cli("process", img, "--model", str(img), "--json")
    assert code == 2 and f"--model {img}: not a folder (a Hugging Face Hub id is" in err


def test_a_library_the_processor_needs_is_named_not_blamed_on_the_folder(tiny_model, monkeypatch):
    """Without torchvision (a CPU-only torch from elsewhere, say) transformers refuses SmolVLM's
    video processor with an ImportError; it was reported as "the folder has no loadable model",
    which sends the user after the weights instead of the package."""
    import transformers

    from smolvlm_watch.engine import ModelLoadError
    from smolvlm_watch.runtime import Runtime, TransformersModel

    def refuse(*args, **kwargs):
        raise ImportError("\nSmolVLMVideoProcessor requires the Torchvision library but it was not found in your "
                          "environment. Check out the instructions on the\ninstallation page")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", refuse)
    with pytest.raises(ModelLoadError) as caught:
        Runtime(TransformersModel(path=tiny_model)).load()
    assert str(caught.value) == (
        f"cannot load model {str(tiny_model)!r}: a library it needs is not installed (ImportError: "
        "SmolVLMVideoProcessor requires the Torchvision library but it was not found in your environment. "
        "Check out the instructions on the). Fix: install it into the Python environment smolvlm-watch runs in "
        "(torchvision: the build that matches torch)")
