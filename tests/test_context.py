"""Issue 30: when and where. A file's capture time, camera and place, read from what the file
itself records, in its sidecar, its XMP and its search passages; the GPS privacy switch."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from helpers import Driven, daemon_config, exif, make_image, read_sidecar
from smolvlm_watch import fixtures
from smolvlm_watch.media import capture
from smolvlm_watch.media.image import captured
from smolvlm_watch.search import context_passages
from smolvlm_watch.web import Web

LISBON_PLACE = {"city": "Lisbon", "state": "Lisbon", "country": "Portugal", "country_code": "PT"}


def _config(tmp_path, tiny_model, extra: str = "", outputs: str = "[json, xmp]"):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model: {{path: {tiny_model}}}
tasks: {{caption: {{max_new_tokens: 2}}}}
watches: [{{path: ./photos, tasks: [caption], outputs: {outputs}}}]
{extra}""")
    return cfg


def _process(run_cli, cfg, *paths):
    code, out, err = run_cli("process", *paths, "-c", cfg, "--json")
    assert code == 0, out + err
    return [json.loads(line) for line in out.splitlines()]


def _place(context: dict) -> dict:
    place = dict(context["place"])
    assert 0 <= place.pop("distance_km") < 5  # the Baixa to Lisbon's centre
    return place


def test_exif_gives_the_time_with_its_offset_the_camera_and_the_position():
    got = captured(Image.open(_jpeg(fixtures.LISBON_TAKEN, fixtures.LISBON)))
    assert got == capture.Capture("2019-07-14T18:03:22+01:00", "Acme Field Camera", (38.716667, -9.139722))
    bare = captured(Image.open(_jpeg(("2019:07:14 18:03:22", None), None)))
    assert (bare.taken_at, bare.gps) == ("2019-07-14T18:03:22", None)  # the camera's local time, said as such
    unset = captured(Image.open(_jpeg(("0000:00:00 00:00:00", None), (0.0, 0.0))))
    assert (unset.taken_at, unset.gps, unset.notes) == (None, None, ())  # an unset clock, a receiver with no fix


def test_a_broken_gps_block_is_a_note_and_the_date_still_counts():
    data = fixtures.exif(taken=fixtures.LISBON_TAKEN)
    data.get_ifd(0x8825).update({1: "N", 2: (IFDRational(38), IFDRational(43)),  # two of three numbers
                                 3: "W", 4: (IFDRational(9), IFDRational(8), IFDRational(27))})
    buf = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buf, "JPEG", exif=data)
    got = captured(Image.open(buf))
    assert got.taken_at == "2019-07-14T18:03:22+01:00" and got.gps is None
    assert got.notes == ("EXIF GPS unreadable (ValueError: not enough values to unpack (expected 3, got 2))",)


def test_a_raw_gives_its_time_and_a_tiff_directory_its_position(tmp_path):
    """A TIFF-based RAW is read from its TIFF directories (Pillow cannot open the mosaic)."""
    from smolvlm_watch.media import raw

    dng = fixtures.dng(tmp_path / "a.dng", (400, 300), taken="2019:07:14 18:03:22", gps=fixtures.LISBON)
    with open(dng, "rb") as f:
        assert raw.captured(f, dng) == capture.Capture("2019-07-14T18:03:22", "Acme Field Camera",
                                                       (38.716667, -9.139722))
    heic = fixtures.heic(tmp_path / "b.heic", (64, 48), taken=("2024:07:20 11:30:00", "+02:00"), gps=(45.8992, 6.1294))
    assert captured(Image.open(heic)) == capture.Capture("2024-07-20T11:30:00+02:00", "Apple iPhone 15",
                                                         (45.8992, 6.1294))
    directories = fixtures.exif(gps=fixtures.LISBON).tobytes()[6:]  # past "Exif\0\0": TIFF directories, as a RAW's
    assert directories[:4] == b"MM\x00*"
    assert raw.captured(io.BytesIO(directories), dng).gps == (38.716667, -9.139722)
    assert raw.captured(io.BytesIO(b"\x00\x00\x00\x0cftypcrx "), dng) == capture.Capture()  # a CR3: not TIFF


def test_a_phone_videos_creation_time_and_iso6709_location():
    got = capture.from_container({"creation_time": "2019-07-14T17:05:00.000000Z", "location": "+38.7167-009.1397/",
                                  "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 15"})
    assert got == capture.Capture("2019-07-14T17:05:00+00:00", "Apple iPhone 15", (38.7167, -9.1397))
    assert capture.from_container({"creation_time": "1904-01-01T00:00:00.000000Z"}).empty  # QuickTime's zero
    broken = capture.from_container({"location": "somewhere"})
    assert broken.gps is None and broken.notes == ("location unreadable (ValueError: not an ISO 6709 position: "
                                                   "'somewhere')",)


def test_the_context_passage_holds_place_date_and_camera():
    ctx = {"taken_at": "2019-07-14T18:03:22+01:00", "camera": "Acme Field Camera",
           "place": {**LISBON_PLACE, "distance_km": 0.6}}
    [passage] = context_passages(ctx)
    assert (passage.task, passage.text) == (
        "context", "Lisbon · Lisbon · Portugal · PT · 2019-07-14 · July 2019 · Acme Field Camera")
    assert context_passages(None) == [] and context_passages({"notes": ["x"]}) == []


@pytest.mark.smoke
def test_process_records_the_place_not_the_coordinates_and_keeps_a_persons_city(tmp_path, tiny_model, run_cli):
    """The default ``context.gps: place-only``: the town in JSON and XMP, no coordinates; a
    photo without EXIF gets no invented date; a person's own photoshop:City stays."""
    photos = tmp_path / "photos"
    lisbon = fixtures.camera_jpeg(photos / "lisbon.jpg", (320, 240), taken=fixtures.LISBON_TAKEN, gps=fixtures.LISBON)
    plain = make_image(photos / "plain.jpg", fmt="JPEG")
    dng = fixtures.dng(photos / "raw.dng", (400, 300), taken="2019:07:14 18:03:22", gps=fixtures.LISBON)
    mine = fixtures.camera_jpeg(photos / "mine.jpg", (320, 240), seed=3, gps=fixtures.LISBON)
    (photos / "mine.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' photoshop:City="Lisboa (Oma)"/></rdf:RDF></x:xmpmeta>', encoding="utf-8")
    _process(run_cli, _config(tmp_path, tiny_model), lisbon, plain, mine, dng)
    raw_ctx = read_sidecar(dng)["context"]
    assert (raw_ctx["taken_at"], raw_ctx["camera"], _place(raw_ctx)) == ("2019-07-14T18:03:22", "Acme Field Camera",
                                                                        LISBON_PLACE)

    ctx = read_sidecar(lisbon)["context"]
    assert set(ctx) == {"taken_at", "camera", "place"} and ctx["taken_at"] == "2019-07-14T18:03:22+01:00"
    assert ctx["camera"] == "Acme Field Camera" and _place(ctx) == LISBON_PLACE
    assert "38.71" not in (photos / "lisbon.jpg.smolvlm.json").read_text()
    assert "context" not in read_sidecar(plain)
    assert exif(photos / "lisbon.jpg.xmp", "XMP-photoshop:City", "XMP-photoshop:Country",
                "XMP-iptcCore:CountryCode", "XMP-exif:DateTimeOriginal") == {
        "City": "Lisbon", "Country": "Portugal", "CountryCode": "PT"}  # the date is in the photo's own EXIF
    assert exif(photos / "mine.jpg.xmp", "XMP-photoshop:City", "XMP-photoshop:Country") == {
        "City": "Lisboa (Oma)", "Country": "Portugal"}


def test_keep_records_the_coordinates_and_off_leaves_them_nowhere(tmp_path, tiny_model, run_cli):
    photos = tmp_path / "photos"
    lisbon = fixtures.camera_jpeg(photos / "lisbon.jpg", (320, 240), taken=fixtures.LISBON_TAKEN, gps=fixtures.LISBON)
    _process(run_cli, _config(tmp_path, tiny_model, "context: {gps: keep}\n"), lisbon)
    ctx = read_sidecar(lisbon)["context"]
    assert ctx["gps"] == {"lat": 38.716667, "lon": -9.139722} and _place(ctx) == LISBON_PLACE

    cfg = _config(tmp_path, tiny_model, "context: {gps: off}\nlogging: {level: debug}\n")
    code, out, err = run_cli("process", lisbon, "--force", "-c", cfg, "--json", "-v")
    assert code == 0 and "38.7" not in out + err and "Lisbon" not in out + err  # nor in any log line
    assert read_sidecar(lisbon)["context"] == {"taken_at": "2019-07-14T18:03:22+01:00", "camera": "Acme Field Camera"}
    for sidecar in photos.glob("lisbon.jpg.*"):
        assert "38.71" not in sidecar.read_text(encoding="utf-8") and "Lisbon" not in sidecar.read_text()


def test_a_phone_video_gets_its_place_and_its_date_in_the_xmp(tmp_path, tiny_model, run_cli):
    video = fixtures.phone_video(tmp_path / "photos" / "IMG_0004.MP4", seconds=1)
    _process(run_cli, _config(tmp_path, tiny_model), video)
    ctx = read_sidecar(video)["context"]
    assert ctx["taken_at"] == "2019-07-14T17:05:00+00:00" and _place(ctx) == LISBON_PLACE
    got = exif(tmp_path / "photos" / "IMG_0004.MP4.xmp", "XMP-photoshop:City", "XMP-exif:DateTimeOriginal")
    assert got == {"City": "Lisbon", "DateTimeOriginal": "2019:07:14 17:05:00+00:00"}


def test_the_daemon_indexes_place_and_date_and_off_keeps_coordinates_out_of_the_journal(tmp_path, tiny_model,
                                                                                         run_cli):
    inbox = tmp_path / "inbox"
    lisbon = fixtures.camera_jpeg(inbox / "lisbon.jpg", (320, 240), taken=fixtures.LISBON_TAKEN, gps=fixtures.LISBON)
    cfg = daemon_config(tmp_path, tiny_model, extra="context: {gps: keep}\n")
    cfg.write_text(cfg.read_text().replace("caption: {max_new_tokens: 2}",
                                           f'caption: {{max_new_tokens: 2, prompt: "{CONTEXT_PROMPT}"}}'))
    d = Driven(cfg)
    try:
        assert d.step() == 1 and d.state(lisbon) == "done"
        caption = read_sidecar(lisbon)["tasks"]["caption"]
        assert caption["prompt"] == "Describe this photo, taken in Lisbon, Portugal in July 2019."
        web = Web(d.daemon.config, d.journal)
        line = '<p class="ctx">Lisbon, Portugal · 2019-07-14 18:03:22+01:00 · Acme Field Camera</p>'
        assert line in web.file({"path": str(lisbon)}).body.decode()
        card = web.search({"q": "Lisbon"}).body.decode()
        assert "1 hit(s)" in card and line in card
    finally:
        d.stop()
    for query in ("Lisbon", "2019-07", "July 2019"):
        code, out, err = run_cli("search", "-c", cfg, "--json", query)
        assert code == 0, err
        assert [(h["path"], h["task"]) for h in map(json.loads, out.splitlines())] == [(str(lisbon), "context")]

    cfg.write_text(cfg.read_text().replace("gps: keep", "gps: off"))
    lisbon.unlink()
    again = fixtures.camera_jpeg(inbox / "again.jpg", (320, 240), seed=5, gps=fixtures.LISBON)
    d = Driven(cfg)
    try:
        assert d.step() == 1 and d.state(again) == "done"
    finally:
        d.stop()
    journal = sqlite3.connect(tmp_path / "state" / "journal.sqlite")
    rows = journal.execute("SELECT text FROM passages WHERE path = ?", (str(again),)).fetchall()
    journal.close()
    assert rows and not any("Lisbon" in text or "38.7" in text for (text,) in rows)


def _jpeg(taken, gps) -> io.BytesIO:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buf, "JPEG", exif=fixtures.exif(taken=taken, gps=gps))
    buf.seek(0)
    return buf


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """The place comes from the data inside the package: no network is reached for it."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)


CONTEXT_PROMPT = "Describe this photo[, taken in {place}][ in {taken_at:%B %Y}]."


def test_a_prompt_is_filled_per_file_and_a_missing_value_drops_its_clause(tmp_path, tiny_model, run_cli):
    """Issue 30, 4: the exact prompt each file was asked, and the fingerprint of that prompt:
    changing the template makes stale only the files whose question it changes."""
    photos = tmp_path / "photos"
    lisbon = fixtures.camera_jpeg(photos / "lisbon.jpg", (320, 240), taken=fixtures.LISBON_TAKEN, gps=fixtures.LISBON)
    plain = make_image(photos / "plain.jpg", fmt="JPEG")
    data = fixtures.exif(taken=fixtures.LISBON_TAKEN)
    data.get_ifd(0x8825).update({1: "N", 2: (IFDRational(38), IFDRational(43)), 3: "W", 4: (IFDRational(9),)})
    broken = photos / "broken.jpg"
    Image.new("RGB", (64, 48), (9, 9, 9)).save(broken, "JPEG", exif=data)
    cfg = _config(tmp_path, tiny_model)
    cfg.write_text(cfg.read_text().replace("caption: {max_new_tokens: 2}",
                                           'caption: {max_new_tokens: 2, prompt: "Describe this photo."}'))
    [first] = _process(run_cli, cfg, lisbon, plain, broken)
    assert sorted(first["done"]) == sorted(map(str, (lisbon, plain, broken)))
    before = {p: read_sidecar(p)["tasks"]["caption"]["fingerprint"] for p in (lisbon, plain, broken)}

    cfg.write_text(cfg.read_text().replace('"Describe this photo."', f'"{CONTEXT_PROMPT}"'))
    [again] = _process(run_cli, cfg, lisbon, plain, broken)
    asked = {p.name: read_sidecar(p)["tasks"]["caption"]["prompt"] for p in (lisbon, plain, broken)}
    assert asked == {"lisbon.jpg": "Describe this photo, taken in Lisbon, Portugal in July 2019.",
                     "plain.jpg": "Describe this photo.",  # no EXIF: both clauses dropped, no date invented
                     "broken.jpg": "Describe this photo in July 2019."}  # its GPS block unreadable
    assert (sorted(again["done"]), again["skipped"]) == (sorted([str(lisbon), str(broken)]), [str(plain)])
    assert read_sidecar(plain)["tasks"]["caption"]["fingerprint"] == before[plain]  # the same question
    assert read_sidecar(broken)["context"]["notes"] == [
        "EXIF GPS unreadable (ValueError: not enough values to unpack (expected 3, got 2))"]

    cfg.write_text(cfg.read_text() + "context: {gps: off}\n")
    _process(run_cli, cfg, lisbon, "--force")
    assert read_sidecar(lisbon)["tasks"]["caption"]["prompt"] == "Describe this photo in July 2019."
