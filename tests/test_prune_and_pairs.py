"""Issue 14: the sidecars of files gone for good are pruned (only what we wrote and nobody
changed), and a RAW shot with a JPEG can take the JPEG's answers (raw_pairs: prefer-jpeg)."""

from __future__ import annotations

import json

from helpers import InProcess, daemon_config, make_image, read_sidecar, wait_for
from smolvlm_watch import fixtures
from smolvlm_watch.journal import Journal


def test_prune_removes_only_unchanged_sidecars_of_files_gone_past_the_grace(tmp_path, tiny_model, run_cli):
    cfg = daemon_config(tmp_path, tiny_model, outputs="[json, xmp]")
    inbox = tmp_path / "inbox"
    images = {n: make_image(inbox / f"{n}.jpg", fmt="JPEG", color=(i * 60, 9, 9)) for i, n in enumerate("abc")}
    d = InProcess(cfg)
    try:
        d.wait_done(images.values())
        edited = inbox / "c.jpg.xmp"
        edited.write_text(edited.read_text(encoding="utf-8").replace("</rdf:RDF>", "<!-- rated --></rdf:RDF>"),
                          encoding="utf-8")  # a photo manager touched it since
        images["a"].unlink()
        images["c"].unlink()
        wait_for(lambda: d.state(images["a"]) == d.state(images["c"]) == "gone", 30, what="a and c gone")
    finally:
        d.stop()

    code, out, _ = run_cli("prune", "-c", cfg)  # within the default 7 days' grace: nothing
    assert code == 0 and out.startswith("prune: removed 0 sidecar file(s) of 0 file(s) gone for more than 7 day(s)")
    cfg.write_text(cfg.read_text().replace("state: {", "state: {gone_grace: 0s, "))
    code, out, _ = run_cli("status", "-c", cfg, "--json")
    assert json.loads(out)["orphans"] == 2
    code, out, _ = run_cli("prune", "-c", cfg, "--dry-run")
    assert code == 0, out
    assert f"  would remove {inbox / 'a.jpg.smolvlm.json'}" in out.splitlines()
    assert f"  kept {edited}: changed since smolvlm-watch wrote it" in out.splitlines()
    assert out.splitlines()[-1] == ("prune: would remove 3 sidecar file(s) of 2 file(s) gone for more than "
                                    "0 day(s); kept 1 changed since we wrote them")
    assert (inbox / "a.jpg.smolvlm.json").exists() and (inbox / "a.jpg.xmp").exists()

    code, out, _ = run_cli("prune", "-c", cfg)
    assert code == 0, out
    left = sorted(p.name for p in inbox.iterdir())
    assert left == ["b.jpg", "b.jpg.smolvlm.json", "b.jpg.xmp", "c.jpg.xmp"]
    journal = Journal(tmp_path / "state" / "journal.sqlite", readonly=True)
    try:
        assert journal.get(str(images["a"])) is None and journal.get(str(images["c"])) is None
        assert journal.get(str(images["b"])).state == "done"
    finally:
        journal.close()


def _pair_config(write_config, tiny_model, pairs: str):
    return write_config(f"model: {{path: {tiny_model}, threads: 1}}\ntasks: {{caption: {{max_new_tokens: 3}}}}\n"
                        f"watches: [{{path: ./card, tasks: [caption], outputs: [json], raw_pairs: {pairs}}}]\n")


def test_prefer_jpeg_gives_the_raw_the_jpegs_answers(tmp_path, tiny_model, run_cli, write_config, monkeypatch):
    card = tmp_path / "card"
    raw = fixtures.dng(card / "IMG_0001.DNG", (600, 400))
    jpeg = fixtures.camera_jpeg(card / "IMG_0001.JPG", (600, 400), seed=5)
    calls: list[int] = []
    from smolvlm_watch.runtime import Runtime

    real = Runtime._generate
    monkeypatch.setattr(Runtime, "_generate", lambda self, batch, f: calls.append(len(batch)) or real(self, batch, f))
    cfg = _pair_config(write_config, tiny_model, "prefer-jpeg")
    code, out, err = run_cli("process", jpeg, "-c", cfg, "--json")
    assert code == 0, out + err
    runs = sum(calls)
    code, out, err = run_cli("process", raw, "-c", cfg, "--json")
    assert code == 0 and json.loads(out)["done"] == [str(raw)], out + err
    assert sum(calls) == runs  # copied from the JPEG's current sidecar: no model run for the RAW
    doc, twin = read_sidecar(raw), read_sidecar(jpeg)
    assert doc["tasks"]["caption"]["result"] == twin["tasks"]["caption"]["result"]
    assert doc["source"]["decoded"] == "pair" and doc["source"]["pair"] == "IMG_0001.JPG"
    assert (doc["source"]["width"], doc["source"]["height"]) == (600, 400)  # the RAW's own size

    (card / "IMG_0001.JPG.smolvlm.json").unlink()  # no current sidecar: the JPEG's pixels are what the model sees
    code, out, err = run_cli("process", raw, "-c", cfg, "--json", "--force")
    assert code == 0 and sum(calls) > runs, out + err
    assert read_sidecar(raw)["source"]["decoded"] == "pair"


def test_independent_pairs_each_look_at_their_own_pixels(tmp_path, tiny_model, run_cli, write_config):
    card = tmp_path / "card"
    raw = fixtures.dng(card / "IMG_0001.DNG", (600, 400))
    fixtures.camera_jpeg(card / "IMG_0001.JPG", (600, 400), seed=5)
    code, out, err = run_cli("process", card, "-c", _pair_config(write_config, tiny_model, "independent"), "--json")
    assert code == 0 and len(json.loads(out)["done"]) == 2, out + err
    assert read_sidecar(raw)["source"]["decoded"] == "demosaic" and "pair" not in read_sidecar(raw)["source"]
