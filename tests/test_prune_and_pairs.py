"""Issue 14: the sidecars of files gone for good are pruned (only what we wrote and nobody
changed), and a RAW shot with a JPEG can take the JPEG's answers (raw_pairs: prefer-jpeg)."""

from __future__ import annotations

import json

from helpers import InProcess, daemon_config, exif, make_image, read_sidecar, wait_for
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


HER_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/" xmp:Rating="5" darktable:history_end="1">
   <dc:subject><rdf:Bag><rdf:li>grandma</rdf:li></rdf:Bag></dc:subject>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_prune_never_deletes_what_a_person_made(tmp_path, tiny_model, run_cli):
    """Issue 25, 1-3: a merged XMP loses only our fields, a file that is back keeps its sidecars,
    a shared IMG_1.xmp stays while IMG_1's other file uses it."""
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, tags]", outputs="[json, xmp]",
                        extra_watch="  xmp_replace_extension: true")
    inbox = tmp_path / "inbox"
    ours = make_image(inbox / "ours.jpg", fmt="JPEG", color=(10, 9, 9))
    hers = make_image(inbox / "hers.jpg", fmt="JPEG", color=(70, 9, 9))
    (inbox / "hers.xmp").write_text(HER_XMP, encoding="utf-8")  # hers before we ever ran
    pair = [make_image(inbox / "IMG_1.jpg", fmt="JPEG", color=(130, 9, 9)), make_image(inbox / "IMG_1.png")]
    back = make_image(inbox / "back.jpg", fmt="JPEG", color=(190, 9, 9))
    d = InProcess(cfg)
    try:
        d.wait_done([ours, hers, *pair, back])
        assert "smolvlm:Caption" in (inbox / "hers.xmp").read_text(encoding="utf-8")  # merged into hers
        kept_back = back.read_bytes()
        for path in (ours, hers, pair[1], back):
            path.unlink()
        wait_for(lambda: all(d.state(p) == "gone" for p in (ours, hers, pair[1], back)), 30, what="gone")
    finally:
        d.stop()
    back.write_bytes(kept_back)  # restored from the bin after the rescan, before prune
    cfg.write_text(cfg.read_text().replace("state: {", "state: {gone_grace: 0s, "))

    code, out, _ = run_cli("prune", "-c", cfg)
    assert code == 0, out
    lines = out.splitlines()
    assert f"  removed {inbox / 'ours.xmp'}" in lines
    assert f"  removed our fields from {inbox / 'hers.xmp'}: it holds others' too" in lines
    assert f"  kept {inbox / 'IMG_1.xmp'}: still used by {pair[0]}" in lines
    assert f"  kept the sidecars of {back}: the file is back (queued again)" in lines
    assert lines[-1] == ("prune: removed 4 sidecar file(s) of 4 file(s) gone for more than 0 day(s); kept 0 "
                         "changed since we wrote them; 1 shared file(s) lost only our fields; 1 still used by "
                         "another file; 1 file(s) back on disk, queued again")
    left = sorted(p.name for p in inbox.iterdir())
    assert left == ["IMG_1.jpg", "IMG_1.jpg.smolvlm.json", "IMG_1.xmp", "back.jpg", "back.jpg.smolvlm.json",
                    "back.xmp", "hers.xmp"]
    assert (inbox / "hers.xmp").read_text(encoding="utf-8") != HER_XMP  # reserialised, but all of hers is there:
    her = exif(inbox / "hers.xmp", "XMP:all")
    assert (her["Rating"], her["Subject"], her["History_end"]) == (5, ["grandma"], 1)
    assert her["HistoryOperation"] == "exposure"
    assert not any(k in her for k in ("Caption", "Description", "Generator", "TagsList")), her
    assert "smolvlm" not in (inbox / "hers.xmp").read_text(encoding="utf-8")
    assert "smolvlm:Caption" in (inbox / "IMG_1.xmp").read_text(encoding="utf-8")
    journal = Journal(tmp_path / "state" / "journal.sqlite", readonly=True)
    try:
        assert journal.get(str(back)).state == "pending" and journal.get(str(hers)) is None
    finally:
        journal.close()
