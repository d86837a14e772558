"""XMP sidecars, read back with exiftool as photo managers would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import exif, make_image, read_sidecar

DARKTABLE_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    xmpMM:DerivedFrom="photo.jpg"
    darktable:xmp_version="5"
    darktable:history_end="2">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
     <rdf:li>Cat</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>places|rome</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1" darktable:params="0000c0bf"/>
     <rdf:li darktable:num="1" darktable:operation="colorin" darktable:enabled="1" darktable:params="gz48eJxj"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


@pytest.fixture
def fixed_results(monkeypatch):
    """Deterministic task results (the tiny model's text is random): what the writer must carry."""
    from smolvlm_watch_plugins.caption import Caption
    from smolvlm_watch_plugins.tags import Tags

    state = {"caption": "Кот на подоконнике 🐈 at dusk", "tags": ["cat", "window", "кот"]}
    monkeypatch.setattr(Caption, "parse", lambda self, a, s, m: state["caption"])
    monkeypatch.setattr(Tags, "parse", lambda self, a, s, m: list(state["tags"]))
    return state


TAGS = ("XMP-dc:Description", "XMP-dc:Subject", "XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject")


def _config(tmp_path, tiny_model, extra: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model: {{path: {tiny_model}}}
tasks: {{caption: {{max_new_tokens: 2}}, tags: {{max_new_tokens: 2}}, ocr: {{max_new_tokens: 2}}}}
watches: [{{path: ./photos, tasks: [caption, tags], outputs: [json, xmp]{extra}}}]
""")
    return cfg


def test_new_xmp_sidecar_read_by_exiftool(tmp_path, tiny_model, run_cli, fixed_results):
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    code, out, err = run_cli("process", img, "-c", _config(tmp_path, tiny_model), "--json")
    assert code == 0, out + err
    xmp = tmp_path / "photos" / "photo.jpg.xmp"
    assert exif(xmp, *TAGS) == {
        "Description": "Кот на подоконнике 🐈 at dusk",
        "Subject": ["cat", "window", "кот"],
        "TagsList": ["AI/cat", "AI/window", "AI/кот"],
        "HierarchicalSubject": ["AI|cat", "AI|window", "AI|кот"],
    }
    raw = xmp.read_bytes().decode("utf-8")
    assert raw.startswith('<?xpacket begin="\ufeff"') and "<x:xmpmeta" in raw and "<rdf:RDF" in raw
    assert read_sidecar(img)["outputs"]["photo.jpg.xmp"]


def test_merge_keeps_everything_and_rerun_replaces_only_our_keywords(tmp_path, tiny_model, run_cli,
                                                                      fixed_results):
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    xmp = tmp_path / "photos" / "photo.jpg.xmp"
    xmp.write_text(DARKTABLE_XMP, encoding="utf-8")
    cfg = _config(tmp_path, tiny_model)
    code, out, err = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out + err
    got = exif(xmp, *TAGS, "XMP-xmp:Rating", "XMP-xmpMM:DerivedFrom")
    assert got["Rating"] == 4 and got["DerivedFrom"] == "photo.jpg"
    assert got["Subject"] == ["holiday", "Cat", "window", "кот"]  # "cat" is the person's "Cat": added once
    assert got["HierarchicalSubject"] == ["places|rome", "AI|cat", "AI|window", "AI|кот"]
    raw = xmp.read_text(encoding="utf-8")
    assert 'darktable:operation="exposure"' in raw and 'darktable:params="gz48eJxj"' in raw
    assert 'darktable:history_end="2"' in raw

    fixed_results["tags"] = ["dog", "garden"]
    fixed_results["caption"] = "A dog in the garden"
    code, out, err = run_cli("process", img, "-c", cfg, "--json", "--force")
    assert code == 0, out + err
    got = exif(xmp, *TAGS, "XMP-xmp:Rating")
    assert got["Subject"] == ["holiday", "Cat", "dog", "garden"]  # the person's stay, ours replaced
    assert got["TagsList"] == ["AI/dog", "AI/garden"]
    assert got["HierarchicalSubject"] == ["places|rome", "AI|dog", "AI|garden"]
    assert got["Description"] == "A dog in the garden" and got["Rating"] == 4


def test_a_persons_description_is_never_replaced(tmp_path, tiny_model, run_cli, fixed_results):
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    xmp = tmp_path / "photos" / "photo.jpg.xmp"
    xmp.write_text(DARKTABLE_XMP.replace("<dc:subject>", '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
                                                         "Grandma's cat</rdf:li></rdf:Alt></dc:description>"
                                                         "<dc:subject>"), encoding="utf-8")
    run_cli("process", img, "-c", _config(tmp_path, tiny_model))
    assert exif(xmp, "XMP-dc:Description")["Description"] == "Grandma's cat"
    assert "Кот на подоконнике" in xmp.read_text(encoding="utf-8")  # kept in our own namespace


def test_lightroom_name_option_and_broken_xmp_is_left_alone(tmp_path, tiny_model, run_cli, fixed_results):
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    cfg = _config(tmp_path, tiny_model, extra=", xmp_replace_extension: true")
    code, _, _ = run_cli("process", img, "-c", cfg)
    assert code == 0 and (tmp_path / "photos" / "photo.xmp").is_file()
    assert not (tmp_path / "photos" / "photo.jpg.xmp").exists()

    other = make_image(tmp_path / "photos" / "other.jpg", fmt="JPEG")
    broken = tmp_path / "photos" / "other.jpg.xmp"
    broken.write_text("<x:xmpmeta this is not xml")
    code, out, _ = run_cli("process", other, "-c", _config(tmp_path, tiny_model), "--json")
    assert code == 1 and "not well-formed XML" in json.loads(out)["failed"][0]["error"]
    assert broken.read_text() == "<x:xmpmeta this is not xml"


def test_control_characters_from_a_degenerate_answer_do_not_break_the_xml():
    from smolvlm_watch import xmp

    data = xmp.merge(None, "bad\x16text\x07", ["a\x16b"], "line\x0b", {"Model": "m"})
    again = xmp.merge(data, "next", ["c"], None, {"Model": "m"})
    assert b"\x16" not in data and b"badtext" in data and b"next" in again


EMBEDDED_XMP = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
<dc:creator><rdf:Seq><rdf:li>Oma Ilse</rdf:li></rdf:Seq></dc:creator><xmp:Rating>3</xmp:Rating>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def test_a_new_sidecar_starts_from_what_the_photo_says_about_itself(tmp_path, tiny_model, run_cli, fixed_results):
    """Keywords (IPTC), description (EXIF) and the embedded XMP's dc:* of a camera photo go into
    the new sidecar first: PhotoPrism reads the sidecar as the only source."""
    from smolvlm_watch import fixtures

    img = fixtures.camera_jpeg(tmp_path / "photos" / "photo.jpg", (800, 600), keywords=["Ferien", "Cat"],
                               description="Am Meer", xmp=EMBEDDED_XMP)
    assert exif(img, "IPTC:Keywords", "EXIF:ImageDescription") == {"Keywords": ["Ferien", "Cat"],
                                                                   "ImageDescription": "Am Meer"}
    code, out, err = run_cli("process", img, "-c", _config(tmp_path, tiny_model), "--json")
    assert code == 0, out + err
    xmp = tmp_path / "photos" / "photo.jpg.xmp"
    got = exif(xmp, *TAGS, "XMP-dc:Creator", "XMP-xmp:Rating")
    assert got["Description"] == "Am Meer"  # the photo's own description is never replaced by ours
    assert got["Subject"] == ["Ferien", "Cat", "window", "кот"]  # ours added once ("cat" is there as "Cat")
    assert got["TagsList"] == ["Ferien", "Cat", "AI/cat", "AI/window", "AI/кот"]
    assert got["Creator"] == "Oma Ilse"
    assert "Rating" not in got  # only dc, lr and digiKam are taken over; a rating is the photo's own

    fixed_results["tags"] = ["dog"]  # a re-run replaces ours and keeps the photo's
    code, out, err = run_cli("process", img, "-c", _config(tmp_path, tiny_model), "--json", "--force")
    assert code == 0, out + err
    assert exif(xmp, "XMP-dc:Subject")["Subject"] == ["Ferien", "Cat", "dog"]


def test_an_existing_seq_stays_a_seq(tmp_path, tiny_model, run_cli, fixed_results):
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    xmp = tmp_path / "photos" / "photo.jpg.xmp"
    xmp.write_text(DARKTABLE_XMP.replace("<rdf:Bag>\n     <rdf:li>holiday", "<rdf:Seq>\n     <rdf:li>holiday")
                   .replace("<rdf:li>Cat</rdf:li>\n    </rdf:Bag>", "<rdf:li>Cat</rdf:li>\n    </rdf:Seq>"),
                   encoding="utf-8")
    assert xmp.read_text(encoding="utf-8").count("<rdf:Seq>") == 2
    code, out, err = run_cli("process", img, "-c", _config(tmp_path, tiny_model), "--json")
    assert code == 0, out + err
    raw = xmp.read_text(encoding="utf-8")
    subject = raw[raw.index("<dc:subject>"):raw.index("</dc:subject>")]
    assert "<rdf:Seq>" in subject and "<rdf:Bag>" not in subject
    assert exif(xmp, "XMP-dc:Subject")["Subject"] == ["holiday", "Cat", "window", "кот"]


def test_a_slash_or_bar_inside_a_tag_makes_no_extra_level(tmp_path, tiny_model, run_cli, fixed_results):
    fixed_results["tags"] = ["ac/dc", "rock|pop", "salt, pepper"]
    img = make_image(tmp_path / "photos" / "photo.jpg", fmt="JPEG")
    code, out, err = run_cli("process", img, "-c", _config(tmp_path, tiny_model), "--json")
    assert code == 0, out + err
    got = exif(tmp_path / "photos" / "photo.jpg.xmp", *TAGS)
    assert got["Subject"] == ["ac/dc", "rock|pop", "salt, pepper"]
    assert got["TagsList"] == ["AI/ac\u2215dc", "AI/rock\u00a6pop", "AI/salt\u201a pepper"]
    assert got["HierarchicalSubject"] == ["AI|ac\u2215dc", "AI|rock\u00a6pop", "AI|salt\u201a pepper"]
    assert all(t.count("/") == 1 for t in got["TagsList"])
    assert all(t.count("|") == 1 for t in got["HierarchicalSubject"])
