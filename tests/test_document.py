"""Scanned documents: PDF and multi-page TIFF in, per-page OCR and one text sidecar out."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import structlog.testing
from PIL import Image, ImageDraw

from helpers import InProcess, daemon_config, process_peak_mb, read_sidecar, spawn, text_pdf, wait_for
from smolvlm_watch.media import Document, Limits
from smolvlm_watch.media import MediaError
from smolvlm_watch.engine import Request, question
from smolvlm_watch.runtime import Runtime, TransformersModel


def page_images(count: int, size=(425, 550)) -> list[Image.Image]:
    pages = []
    for i in range(count):
        img = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(img)
        draw.text((40, 40), f"Page {i + 1}\nInvoice 2026-{i:03d}", fill="black")
        draw.rectangle((40, 100, 40 + 30 * (i + 1) % 300, 120), fill="black")
        pages.append(img)
    return pages


def make_pdf(path: Path, count: int, size=(425, 550), resolution: float = 50.0) -> Path:
    """Pages of size/resolution inches (425x550 at 50 dpi: US Letter)."""
    pages = page_images(count, size)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=resolution)
    return path


def test_pdf_pages_in_order_in_sidecar_and_txt(tmp_path, tiny_model, run_cli):
    pdf = make_pdf(tmp_path / "scan.pdf", 3)
    code, out, err = run_cli("process", pdf, "--model", tiny_model, "--task", "ocr", "--task", "caption", "--json")
    assert code == 0, out + err
    doc = read_sidecar(pdf)
    assert doc["source"]["kind"] == "document" and doc["source"]["pages"] == 3
    assert doc["source"]["format"] == "pdf" and doc["source"]["dpi"] == 200
    pages = doc["pages"]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert all((p["width"], p["height"]) == (1700, 2200) for p in pages)  # 8.5 x 11 in at 200 dpi
    assert all(p["ocr_source"] == "model" and p["seconds"] > 0 for p in pages)
    txt = (tmp_path / "scan.pdf.txt").read_text(encoding="utf-8")
    assert txt.split("\f") == [p["ocr"] for p in pages]
    assert doc["tasks"]["ocr"]["result"] == txt and doc["tasks"]["ocr"]["pages"] == 3
    assert isinstance(doc["tasks"]["caption"]["result"], str)  # first page by default


def test_multipage_tiff(tmp_path, tiny_model, run_cli):
    pages = page_images(3, (300, 400))
    tif = tmp_path / "fax.tif"
    pages[0].save(tif, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    code, out, err = run_cli("process", tif, "--model", tiny_model, "--task", "ocr", "--json")
    assert code == 0, out + err
    doc = read_sidecar(tif)
    assert doc["source"]["kind"] == "document" and doc["source"]["format"] == "tiff"
    assert [(p["page"], p["width"], p["height"]) for p in doc["pages"]] == [(1, 300, 400), (2, 300, 400),
                                                                            (3, 300, 400)]
    assert (tmp_path / "fax.tif.txt").read_text().count("\f") == 2


def test_page_prompt_ids_equal_the_processors_for_the_rendered_image(tmp_path, tiny_model):
    import pypdfium2 as pdfium
    from transformers import AutoProcessor

    pdf = make_pdf(tmp_path / "one.pdf", 2)
    doc = Document(pdf, Limits(dpi=100))
    image, _ = doc.page(1)
    doc.close()
    reference_image = pdfium.PdfDocument(str(pdf))[1].render(scale=100 / 72).to_pil().convert("RGB")
    assert image.size == reference_image.size == (850, 1100)
    processor = AutoProcessor.from_pretrained(tiny_model)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read it."}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    ref = processor(text=[prompt], images=[[reference_image]], return_tensors="pt")
    runtime = Runtime(TransformersModel(path=tiny_model, dtype="float32"))
    ours = runtime.encode([Request(images=(image,), messages=question("Read it."))])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["pixels"][0].pixel_values, ref["pixel_values"][0])


def test_broken_documents_give_clear_errors(tmp_path):
    from pypdf import PdfReader, PdfWriter

    good = make_pdf(tmp_path / "good.pdf", 2)
    writer = PdfWriter(clone_from=PdfReader(good))
    writer.encrypt("secret")
    with open(tmp_path / "locked.pdf", "wb") as f:
        writer.write(f)
    with pytest.raises(MediaError, match="the PDF is encrypted"):
        Document(tmp_path / "locked.pdf", Limits())
    data = good.read_bytes()
    (tmp_path / "trunc.pdf").write_bytes(data[: len(data) // 4])
    with pytest.raises(MediaError, match="broken or truncated PDF"):
        Document(tmp_path / "trunc.pdf", Limits())
    text_pdf(tmp_path / "empty.pdf", [])
    with pytest.raises(MediaError, match="or one without pages"):
        Document(tmp_path / "empty.pdf", Limits())
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + b"\x13\x37" * 100)
    with pytest.raises(MediaError, match="broken or truncated PDF"):
        Document(tmp_path / "garbage.pdf", Limits())
    with pytest.raises(MediaError, match="6 pages, over the document.max_pages limit of 5"):
        Document(make_pdf(tmp_path / "long.pdf", 6), Limits(max_pages=5))


def test_failed_page_is_recorded_while_the_others_complete(tmp_path, tiny_model, run_cli, write_config):
    small = page_images(2)
    big = Image.new("RGB", (2000, 2000), "white")
    pdf = tmp_path / "inbox" / "mixed.pdf"
    pdf.parent.mkdir()
    small[0].save(pdf, save_all=True, append_images=[big, small[1]], resolution=50)
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
document: {{dpi: 100, max_page_pixels: 2000000}}
watches: [{{path: ./inbox, tasks: [ocr], outputs: [json, txt]}}]
""")
    code, out, _ = run_cli("process", pdf, "-c", cfg, "--json")
    assert code == 1
    assert json.loads(out)["failed"][0]["error"] == ("page 2: 4000x4000 = 16000000 pixels, over the "
                                                     "document.max_page_pixels limit of 2000000 (lower document.dpi)")
    pages = read_sidecar(pdf)["pages"]
    assert "error" in pages[1] and "ocr" not in pages[1]
    assert "ocr" in pages[0] and "ocr" in pages[2] and (pages[0]["width"], pages[0]["height"]) == (850, 1100)
    assert (tmp_path / "inbox" / "mixed.pdf.txt").read_text().split("\f")[1] == ""


@pytest.mark.parametrize("mode, source", [("auto", "text_layer"), ("never", "model"), ("always", "text_layer")])
def test_text_layer_use(tmp_path, tiny_model, run_cli, write_config, mode, source):
    texts = ["Hello from the text layer", "Second page of the invoice"]
    pdf = text_pdf(tmp_path / "inbox" / "born-digital.pdf", texts)
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
tasks: {{ocr: {{use_text_layer: {mode}, max_new_tokens: 4}}}}
document: {{dpi: 72}}
watches: [{{path: ./inbox, tasks: [ocr], outputs: [json, txt]}}]
""")
    code, out, err = run_cli("process", pdf, "-c", cfg, "--json")
    assert code == 0, out + err
    pages = read_sidecar(pdf)["pages"]
    assert [p["ocr_source"] for p in pages] == [source, source]
    if source == "text_layer":
        assert [p["ocr"] for p in pages] == texts
        assert (tmp_path / "inbox" / "born-digital.pdf.txt").read_text() == \
            "Hello from the text layer\fSecond page of the invoice"


def test_peak_memory_does_not_grow_with_page_count(tmp_path, tiny_model, write_config):
    """300 pages rendered at 100 dpi are ~2.8 GB of pixels; only a batch of them is ever held."""
    cfg = write_config(f"""
model: {{path: {tiny_model}, threads: 1}}
tasks: {{ocr: {{max_new_tokens: 1, image_splitting: false}}}}
document: {{dpi: 100}}
watches: [{{path: ./docs, tasks: [ocr], outputs: [json]}}]
""")
    (tmp_path / "docs").mkdir()
    page = page_images(1)[0]
    peaks = {}
    for count in (4, 300):
        pdf = tmp_path / "docs" / f"p{count}.pdf"
        page.save(pdf, save_all=True, append_images=[page] * (count - 1), resolution=50)
        peaks[count] = process_peak_mb(pdf, cfg)
        assert read_sidecar(pdf)["source"]["pages"] == count
    assert peaks[300] < peaks[4] + 150, peaks  # bounded: within 150 MB of a 4-page document


def test_kill_9_mid_document_resumes_without_redoing_finished_pages(tmp_path, tiny_model):
    from smolvlm_watch.journal import Journal

    cfg = daemon_config(tmp_path, tiny_model, tasks="[ocr]", outputs="[json, txt]")
    cfg.write_text(cfg.read_text().replace("ocr: {max_new_tokens: 2, image_splitting: false}",
                                           "ocr: {max_new_tokens: 60, image_splitting: false, "
                                           "options: {loop_guard: false}}")
                   + "runtime: {max_batch: 2}\ndocument: {dpi: 50}\n")
    db = tmp_path / "state" / "journal.sqlite"
    pdf = make_pdf(tmp_path / "long.pdf", 40)

    def saved_pages() -> int:
        if not db.exists():
            return 0
        j = Journal(db)
        try:
            return j.db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        finally:
            j.close()

    proc = spawn(cfg)
    try:
        target = tmp_path / "inbox" / "long.pdf"
        pdf.rename(target)
        wait_for(lambda: saved_pages() >= 6, 90, what="some pages done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    before = saved_pages()
    assert 6 <= before < 40
    with structlog.testing.capture_logs() as logged:  # the restart, in this process: it sees what the kill left
        d = InProcess(cfg)
        try:
            d.wait_done([target], 180)
        finally:
            d.stop()
    done = [e for e in logged if e["event"] == "job_done"]
    assert done and done[-1]["pages_resumed"] >= before
    assert saved_pages() == 0  # kept only until the document is complete
    doc = read_sidecar(target)
    assert [p["page"] for p in doc["pages"]] == list(range(1, 41))
    assert (tmp_path / "inbox" / "long.pdf.txt").read_text().count("\f") == 39
