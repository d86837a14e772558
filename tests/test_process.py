"""End to end: `smolvlm-watch process` on real files with the tiny model."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

from PIL import Image

from helpers import make_image, process_peak_mb, read_sidecar
from smolvlm_watch.sidecar import sha256_bytes
from smolvlm_watch.runtime import TransformersModel, placement

AUTO_CPU = placement(TransformersModel(device="cpu"))  # bf16 where the CPU has it, else int8 over float32
SIDECAR_KEYS = {"schema", "generator", "source", "model", "tasks", "created", "outputs"}
SOURCE_KEYS = {"path", "size", "mtime", "sha256", "kind", "width", "height"}
TASK_KEYS = {"result", "raw", "prompt", "generation", "plugin", "plugin_version", "seconds"}


def _mixed_folder(root: Path) -> Path:
    folder = root / "inbox"
    make_image(folder / "a.png", (80, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° CW to display
    img = Image.new("RGB", (120, 40), (10, 200, 10))
    img.save(folder / "rotated.jpg", "JPEG", exif=exif.tobytes())
    make_image(folder / "c.webp", (64, 64), fmt="WEBP")
    make_image(folder / "really-png.jpg", (50, 70), fmt="PNG")
    make_image(folder / "sub" / "deeper" / "nested.png", (40, 40))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.md").write_text("not media, ignored in folders")
    return folder


@pytest.mark.smoke
def test_process_folder_writes_expected_sidecars_and_reports_failures(tmp_path, tiny_model, run_cli):
    folder = _mixed_folder(tmp_path)
    code, out, _ = run_cli("process", folder, "--model", tiny_model, "--task", "caption", "--task", "tags",
                           "--task", "ocr", "--json")
    assert code == 1
    report = json.loads(out)
    good = ["a.png", "c.webp", "really-png.jpg", "rotated.jpg", "sub/deeper/nested.png"]
    assert sorted(str(Path(p).relative_to(folder)) for p in report["done"]) == good
    assert report["skipped"] == []
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"corrupt.jpg", "empty.png"}
    assert failed["empty.png"] == "empty file (0 bytes)"
    assert failed["corrupt.jpg"].startswith("corrupt or truncated image")

    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".smolvlm" in p.name or
                     p.name.endswith(".txt"))
    assert written == sorted([f"{n}.smolvlm.json" for n in good] + [f"{n}.txt" for n in good])
    for name in good:
        doc = read_sidecar(folder / name)
        assert set(doc) == SIDECAR_KEYS
        assert set(doc["source"]) == SOURCE_KEYS and doc["source"]["kind"] == "image"
        assert doc["schema"] == 1
        assert doc["model"] == {"id": str(tiny_model), "revision": None, "dtype": AUTO_CPU.dtype, "device": "cpu",
                                "backend": "transformers", **({"quantize": "int8"} if AUTO_CPU.quantize else {})}
        assert set(doc["tasks"]) == {"caption", "tags", "ocr"}
        for entry in doc["tasks"].values():
            assert TASK_KEYS <= set(entry)
        assert isinstance(doc["tasks"]["tags"]["result"], list)
        assert (folder / f"{name}.txt").read_text(encoding="utf-8") == doc["tasks"]["ocr"]["result"]
    # EXIF orientation 6 turns the stored 120x40 into an upright 40x120.
    assert (read_sidecar(folder / "rotated.jpg")["source"]["width"],
            read_sidecar(folder / "rotated.jpg")["source"]["height"]) == (40, 120)
    assert read_sidecar(folder / "really-png.jpg")["source"]["width"] == 50


def test_second_run_skips_current_sidecars_and_force_reruns(tmp_path, tiny_model, run_cli):
    img = make_image(tmp_path / "one.png")
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--json")
    assert code == 0 and json.loads(out)["done"] == [str(img)]
    first = read_sidecar(img)
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--json")
    assert json.loads(out) == {"done": [], "skipped": [str(img)], "failed": []}
    assert read_sidecar(img) == first
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--json", "--force")
    assert json.loads(out)["done"] == [str(img)]


def test_merge_runs_only_the_new_task_and_keeps_the_others(tmp_path, tiny_model, run_cli):
    img = make_image(tmp_path / "one.png")
    run_cli("process", img, "--model", tiny_model, "--task", "caption")
    caption = read_sidecar(img)["tasks"]["caption"]
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--task", "tags", "--json")
    assert json.loads(out)["done"] == [str(img)]
    doc = read_sidecar(img)
    assert doc["tasks"]["caption"] == caption  # kept, not recomputed
    assert set(doc["tasks"]) == {"caption", "tags"}


def test_changed_content_reruns_everything(tmp_path, tiny_model, run_cli):
    img = make_image(tmp_path / "one.png", color=(1, 2, 3))
    run_cli("process", img, "--model", tiny_model, "--task", "caption")
    before = read_sidecar(img)["source"]["sha256"]
    make_image(img, color=(250, 250, 250))
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--json")
    assert json.loads(out)["done"] == [str(img)]
    assert read_sidecar(img)["source"]["sha256"] != before


def test_foreign_files_are_never_overwritten(tmp_path, tiny_model, run_cli):
    img = make_image(tmp_path / "one.png")
    foreign_json = tmp_path / "one.png.smolvlm.json"
    foreign_json.write_text('{"mine": true}')
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "caption", "--json")
    assert code == 1
    assert "is not a smolvlm-watch sidecar" in json.loads(out)["failed"][0]["error"]
    assert foreign_json.read_text() == '{"mine": true}'

    img2 = make_image(tmp_path / "two.png")
    foreign_txt = tmp_path / "two.png.txt"
    foreign_txt.write_text("a person's notes")
    code, out, _ = run_cli("process", img2, "--model", tiny_model, "--task", "ocr", "--json")
    assert code == 1
    assert "was not written by smolvlm-watch" in json.loads(out)["failed"][0]["error"]
    assert foreign_txt.read_text() == "a person's notes"


def test_our_own_txt_is_rewritten_but_an_edited_one_is_not(tmp_path, tiny_model, run_cli):
    img = make_image(tmp_path / "one.png")
    run_cli("process", img, "--model", tiny_model, "--task", "ocr")
    txt = tmp_path / "one.png.txt"
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "ocr", "--force", "--json")
    assert code == 0
    txt.write_text("corrected by hand")
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "ocr", "--force", "--json")
    assert code == 0 and txt.read_text() == "corrected by hand"  # her correction kept, the file not failed
    recorded = read_sidecar(img)["outputs"]["one.png.txt"]
    assert recorded != sha256_bytes(b"corrected by hand")  # still our hash: hers at every later run too
    code, out, _ = run_cli("process", img, "--model", tiny_model, "--task", "ocr", "--force", "--json")
    assert code == 0 and txt.read_text() == "corrected by hand"


def test_an_edited_ocr_txt_does_not_block_restoring_the_deleted_xmp(tmp_path, tiny_model, write_config, run_cli):
    """Issue 25, 16: the file was marked failed; now her edit stays and the rest is restored."""
    img = make_image(tmp_path / "inbox" / "scan.png")
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\ntasks: {{ocr: {{max_new_tokens: 3}}}}\n"
                       f"watches: [{{path: {tmp_path / 'inbox'}, tasks: [ocr], outputs: [json, txt, xmp]}}]\n")
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out
    (tmp_path / "inbox" / "scan.png.txt").write_text("Invoice 42, corrected")
    (tmp_path / "inbox" / "scan.png.xmp").unlink()
    code, out, _ = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0 and json.loads(out)["skipped"] == [str(img)], out  # results current: no model run
    assert "smolvlm:OCRText" in (tmp_path / "inbox" / "scan.png.xmp").read_text(encoding="utf-8")
    assert (tmp_path / "inbox" / "scan.png.txt").read_text() == "Invoice 42, corrected"


def test_a_pair_shares_its_stem_named_caption_txt(tmp_path, tiny_model, write_config, run_cli):
    """Issue 25, 16: with caption_txt, IMG_1.jpg and IMG_1.png both write IMG_1.txt; the second
    failed for good ("not written by smolvlm-watch" — it was, for the other)."""
    card = tmp_path / "card"
    pair = [make_image(card / "IMG_1.jpg", fmt="JPEG"), make_image(card / "IMG_1.png", color=(1, 2, 3))]
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\ntasks: {{caption: {{max_new_tokens: 3}}}}\n"
                       f"watches: [{{path: {card}, tasks: [caption], outputs: [json, txt], caption_txt: true}}]\n")
    for _ in range(2):  # and again, each now finding the other's
        code, out, _ = run_cli("process", card, "-c", cfg, "--json", "--force")
        assert code == 0 and sorted(json.loads(out)["done"]) == sorted(map(str, pair)), out
    assert (card / "IMG_1.txt").read_text(encoding="utf-8") in {read_sidecar(p)["tasks"]["caption"]["result"]
                                                                for p in pair}


def test_output_dir_mirrors_the_tree(tmp_path, tiny_model, run_cli, write_config):
    make_image(tmp_path / "inbox" / "x" / "deep.png")
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
watches:
  - path: ./inbox
    tasks: [caption]
    outputs: [json]
    output_dir: ./mirror
""")
    code, out, _ = run_cli("process", tmp_path / "inbox", "-c", cfg, "--json")
    assert code == 0, out
    assert (tmp_path / "mirror" / "x" / "deep.png.smolvlm.json").is_file()
    assert not (tmp_path / "inbox" / "x" / "deep.png.smolvlm.json").exists()


def test_missing_model_gives_clear_error(tmp_path, run_cli):
    img = make_image(tmp_path / "one.png")
    code, out, err = run_cli("process", img, "--model", "nobody/no-such-model", "--task", "caption")
    assert code == 1
    assert "cannot load model 'nobody/no-such-model'" in err
    assert "model.path" in err


def test_missing_path_is_reported(tmp_path, tiny_model, run_cli):
    code, out, _ = run_cli("process", tmp_path / "nope.png", "--model", tiny_model, "--json")
    assert code == 1
    assert json.loads(out)["failed"] == [{"path": str(tmp_path / "nope.png"), "error": "no such file or directory"}]


def test_fifty_mixed_images(tmp_path, tiny_model, run_cli, write_config):
    from smolvlm_watch.testing import sample_images

    folder = tmp_path / "inbox"
    images = sample_images(folder, count=50, seed=3)
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
tasks:
  caption: {{max_new_tokens: 8}}
  tags: {{max_new_tokens: 8}}
watches:
  - path: ./inbox
    tasks: [caption, tags]
    outputs: [json]
""")
    code, out, _ = run_cli("process", folder, "-c", cfg, "--json")
    assert code == 0
    assert sorted(json.loads(out)["done"]) == sorted(str(p) for p in images)
    for img in images:
        doc = read_sidecar(img)
        assert doc["source"]["sha256"] and set(doc["tasks"]) == {"caption", "tags"}
        assert doc["tasks"]["caption"]["generation"]["max_new_tokens"] == 8


def test_peak_memory_does_not_grow_with_the_folder(tmp_path, tiny_model, write_config):
    from smolvlm_watch.testing import sample_images

    cfg = write_config(f"""
model: {{path: {tiny_model}, threads: 1}}
tasks: {{caption: {{max_new_tokens: 2}}, tags: {{max_new_tokens: 2}}, ocr: {{max_new_tokens: 2}}}}
watches: [{{path: ., tasks: [caption, tags, ocr], outputs: [json, txt]}}]
""")
    peaks = {}
    for count in (20, 150):
        folder = tmp_path / f"f{count}"
        sample_images(folder, count=count, seed=count)
        peaks[count] = process_peak_mb(folder, cfg)
    assert peaks[150] < peaks[20] + 60, peaks  # 7.5x the files, no more than 60 MB more


def test_files_under_a_media_name_that_a_folder_scan_passes_over_are_reported(tmp_path, tiny_model, run_cli):
    """A field run: `process` on a folder said "done 13, skipped 0, failed 0" for 14 photos; a
    symlink to a photo elsewhere was passed over in silence (and `explain` called a FIFO named
    .jpg one that "would be processed")."""
    import os

    folder = tmp_path / "inbox"
    make_image(folder / "a.png", (80, 60))
    make_image(tmp_path / "elsewhere.png", (80, 60))
    (folder / "link.png").symlink_to(tmp_path / "elsewhere.png")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "notes.md").write_text("another extension: the watch's rule, not reported")
    code, out, _ = run_cli("process", folder, "--model", tiny_model, "--task", "caption")
    assert code == 0
    assert out.splitlines()[-2:] == [
        "done 1, skipped 0, failed 0",
        "  not taken: 1 a symlink to a file outside the watch, 1 not regular files (a FIFO, socket or device "
        "under a media name); `smolvlm-watch explain FILE` says why for a file"]
    code, out, err = run_cli("process", folder, "--model", tiny_model, "--task", "caption", "--json")
    assert json.loads(out) == {"done": [], "skipped": [str(folder / "a.png")], "failed": []}  # one object
    assert "files_not_taken" in err and "a symlink to a file outside the watch" in err
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {{path: {tiny_model}}}\nwatches: [{{path: {folder}, tasks: [caption]}}]\n")
    code, out, _ = run_cli("explain", folder / "pipe.jpg", "-c", cfg)
    assert "filter: not input: not a regular file (a FIFO, socket or device under a media name)" in out
    assert "verdict: would not be processed (not a regular file" in out


def test_two_writers_of_one_sidecar_set_merge_instead_of_dropping_each_other(tmp_path, tiny_model, write_config):
    """Issue 25, 6: `process --task tags` beside the daemon left a JSON holding only tags, and each
    run's .txt was "not written by smolvlm-watch" for the other. Two pipelines (the daemon's:
    caption + OCR to json and txt; a `process --task tags`) interleaved at the worst moment: the
    second has read the sidecar before the first wrote it, and commits after."""
    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.pipeline import Pipeline

    img = make_image(tmp_path / "inbox" / "page.png")
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\n"
                       "tasks: {caption: {max_new_tokens: 2}, ocr: {max_new_tokens: 2, image_splitting: false},"
                       " tags: {max_new_tokens: 2}}\n"
                       f"watches: [{{path: {tmp_path / 'inbox'}, tasks: [caption, ocr], outputs: [json, txt]}}]\n")
    config, registry = load_checked(cfg)
    daemon = Pipeline(config, registry, registry.engine(config))
    watch = config.watches[0]
    tags_only = type(watch)(path=watch.path, tasks=("tags",), outputs=watch.outputs, output=watch.output)
    late = daemon.prepare(img, tags_only)  # read: no sidecar yet
    [first] = daemon.run([daemon.prepare(img, watch)])  # meanwhile the daemon writes caption, OCR and the txt
    assert first.status == "done", first
    [second] = daemon.run([late])
    assert second.status == "done", second.error  # the daemon's txt is known as ours, not foreign
    doc = read_sidecar(img)
    assert set(doc["tasks"]) == {"caption", "ocr", "tags"}  # nobody's results dropped
    assert doc["outputs"] == {"page.png.txt": first.outputs["page.png.txt"]}
    assert (tmp_path / "inbox" / "page.png.txt").read_text(encoding="utf-8") == doc["tasks"]["ocr"]["result"]


def test_each_task_is_charged_the_steps_its_answers_took(tmp_path, tiny_model, run_cli, write_config):
    """Issue 27, 9: every task of a file got the same 'seconds' (the call's time split evenly), so a
    2-token tags answer looked as costly as a 24-token caption. The call's time is now shared by
    the steps each answer took (its new tokens, and one for its prefill)."""
    img = make_image(tmp_path / "in" / "a.png")
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\n"
                       "tasks:\n  caption: {max_new_tokens: 24, min_new_tokens: 24}\n  tags: {max_new_tokens: 2}\n"
                       f"watches: [{{path: {tmp_path / 'in'}, tasks: [caption, tags], outputs: [json]}}]\n")
    code, out, err = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out + err
    caption, tags = (read_sidecar(img)["tasks"][t] for t in ("caption", "tags"))
    assert caption["tokens"] == 24 and tags["tokens"] <= 2
    steps = (caption["tokens"] + 1) / (tags["tokens"] + 1)
    assert caption["seconds"] / tags["seconds"] == pytest.approx(steps, rel=0.02)
