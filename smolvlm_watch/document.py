"""Scanned documents: PDFs (rendered with pypdfium2) and multi-page TIFFs, one page at a time.

pypdfium2 wraps PDFium, the PDF engine of Chrome: it ships as a wheel with the library inside
(no poppler or ghostscript to install), renders fast, reads text layers, and reports encrypted
and broken files distinctly. Pages are rendered lazily, so a 300-page PDF never holds more than
the pages of the batch in flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from .config import DocumentConfig
from .media import Media, MediaError, SourceInfo, upright_rgb

TEXT_LAYER_MIN_CHARS = 16  # "auto": a page with at least this much text uses its text layer


def sniff_document(head: bytes) -> bool:
    return head.startswith(b"%PDF-")


class Document:
    """An open PDF or multi-page TIFF; ``page(i)`` renders page i (0-based) when asked."""

    def __init__(self, path: Path, settings: DocumentConfig):
        self.path, self.settings = path, settings
        self._pdf = self._tiff = None
        with open(path, "rb") as f:
            head = f.read(8)
        if sniff_document(head):
            self._open_pdf()
        else:
            self._open_tiff()
        if self.page_count == 0:
            self.close()
            raise MediaError(path, "the document has no pages")
        if self.page_count > settings.max_pages:
            count = self.page_count
            self.close()
            raise MediaError(path, f"the document has {count} pages, over the document.max_pages limit of "
                                   f"{settings.max_pages}")

    def _open_pdf(self) -> None:
        import pypdfium2 as pdfium

        self.format = "pdf"
        try:
            self._pdf = pdfium.PdfDocument(str(self.path))
        except pdfium.PdfiumError as exc:
            text = str(exc)
            if "password" in text.lower():
                raise MediaError(self.path, "the PDF is encrypted (password protected); save an unprotected copy")
            # PDFium also refuses a well-formed PDF with zero pages as a "data format error".
            raise MediaError(self.path, f"broken or truncated PDF, or one without pages: {text}") from None
        self.page_count = len(self._pdf)

    def _open_tiff(self) -> None:
        self.format = "tiff"
        try:
            self._tiff = Image.open(self.path)
            self.page_count = getattr(self._tiff, "n_frames", 1)
        except OSError as exc:
            raise MediaError(self.path, f"corrupt or truncated TIFF: {exc}") from None

    def page(self, index: int) -> tuple[Image.Image, str | None]:
        """The page as an upright RGB image, and its PDF text layer (None for a TIFF)."""
        if self._pdf is not None:
            return self._pdf_page(index)
        try:
            self._tiff.seek(index)
            img = self._tiff.copy()
            self._check_pixels(index, img.width, img.height)
            return upright_rgb(img), None
        except (OSError, EOFError) as exc:
            raise MediaError(self.path, f"page {index + 1}: cannot decode: {exc}") from None

    def _pdf_page(self, index: int) -> tuple[Image.Image, str | None]:
        import pypdfium2 as pdfium

        try:
            page = self._pdf[index]
            w_pt, h_pt = page.get_size()
            scale = self.settings.dpi / 72
            self._check_pixels(index, round(w_pt * scale), round(h_pt * scale))
            img = page.render(scale=scale).to_pil().convert("RGB")
            textpage = page.get_textpage()
            text = textpage.get_text_range()
            textpage.close()
            page.close()
        except pdfium.PdfiumError as exc:
            raise MediaError(self.path, f"page {index + 1}: cannot render: {exc}") from None
        return img, text.replace("\r\n", "\n").strip()

    def _check_pixels(self, index: int, w: int, h: int) -> None:
        if w * h > self.settings.max_page_pixels:
            raise MediaError(self.path, f"page {index + 1} would be {w}x{h} pixels, over the "
                                        f"document.max_page_pixels limit of {self.settings.max_page_pixels} "
                                        "(lower document.dpi)")

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
        if self._tiff is not None:
            self._tiff.close()


def is_document(path: Path, head: bytes) -> bool:
    """PDFs, and TIFFs holding more than one page."""
    if sniff_document(head):
        return True
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            with Image.open(path) as img:
                return getattr(img, "n_frames", 1) > 1
        except OSError:
            return False
    return False


def source_info(path: Path, doc: Document, sha256: str) -> SourceInfo:
    st = path.stat()
    return SourceInfo(path=str(path), size=st.st_size, mtime=st.st_mtime, sha256=sha256,
                      kind="document", width=0, height=0,
                      extra={"pages": doc.page_count, "format": doc.format, "dpi": doc.settings.dpi})


def page_media(info: SourceInfo, index: int, image: Image.Image, text_layer: str | None) -> Media:
    """One page as Media of kind ``document``: what tasks that accept documents are given."""
    page_info = SourceInfo(path=info.path, size=info.size, mtime=info.mtime, sha256=info.sha256,
                           kind="document", width=image.width, height=image.height,
                           extra={"page": index + 1, "text_layer": text_layer})
    return Media(info=page_info, images=(image,))


def pages_media(info: SourceInfo, images: list[Image.Image]) -> Media:
    """Several pages in one multi-image question (the ``all`` mode)."""
    first = images[0]
    page_info = SourceInfo(path=info.path, size=info.size, mtime=info.mtime, sha256=info.sha256,
                           kind="document", width=first.width, height=first.height,
                           extra={"page": 1, "pages_in_question": len(images), "text_layer": None})
    return Media(info=page_info, images=tuple(images))


def page_record(index: int, media: Media | None, outcomes: dict[str, Any], seconds: float,
                error: str | None = None) -> dict[str, Any]:
    """A page's entry in the sidecar's ``pages`` list."""
    rec: dict[str, Any] = {"page": index + 1}
    if media is not None:
        rec.update(width=media.info.width, height=media.info.height)
    rec["seconds"] = round(seconds, 4)
    ocr = outcomes.get("ocr")
    if ocr is not None:
        if "error" in ocr:
            rec["error"] = f"ocr: {ocr['error']}"
        elif isinstance(ocr.get("result"), dict):
            rec["ocr"] = ocr["result"]["text"]
            rec["ocr_source"] = ocr["result"]["source"]
    if error:
        rec["error"] = error
    rec["tasks"] = {name: data for name, data in outcomes.items() if name != "ocr"}
    if not rec["tasks"]:
        del rec["tasks"]
    return rec
