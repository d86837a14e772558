"""Scanned documents: PDFs (rendered with pypdfium2) and multi-page TIFFs, one page at a time.

pypdfium2 wraps PDFium, the PDF engine of Chrome: it ships as a wheel with the library inside
(no poppler or ghostscript to install), renders fast, reads text layers, and reports encrypted
and broken files distinctly. Pages are rendered lazily, so a 300-page PDF never holds more than
the pages of the batch in flight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from .base import (Limits, Media, MediaError, SourceInfo, broken, check_pixels, frame_count, open_input,
                   source_info, upright_rgb)


PDF_DECODER = "pypdfium2 (PDFium)"


def sniff(head: bytes) -> bool:
    return head.startswith(b"%PDF-")


class Document:
    """An open PDF or multi-page TIFF; ``page(i)`` renders page i (0-based) when asked.

    ``source`` is a path, or an input opened with ``open_input`` (then it is read through that
    file, which the caller closes); ``tiff`` is the TIFF Pillow already opened to count its pages.
    """

    def __init__(self, source: Path | BinaryIO, limits: Limits, path: Path | None = None,
                 tiff: Image.Image | None = None):
        self.limits = limits
        self._pdf: Any = None
        self._tiff: Image.Image | None = tiff
        self._own: BinaryIO | None = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            source = self._own = open_input(path)[0]
        self.path: Path = path or Path("<document>")
        try:
            self._open(source)
        except BaseException:
            self.close()
            raise
        if self.page_count == 0:
            self.close()
            raise MediaError(self.path, "the document has no pages")
        if self.page_count > limits.max_pages:
            count = self.page_count
            self.close()
            raise MediaError(self.path, f"the document has {count} pages, over the document.max_pages limit of "
                                        f"{limits.max_pages}")

    def _open(self, f: BinaryIO) -> None:
        if self._tiff is not None:
            self.format, self.page_count = "tiff", frame_count(self._tiff, self.path)
            return
        f.seek(0)
        if sniff(f.read(8)):
            self._open_pdf(f)
        else:
            self._open_tiff(f)

    def _open_pdf(self, f: BinaryIO) -> None:
        import pypdfium2 as pdfium

        self.format = "pdf"
        f.seek(0)
        try:
            self._pdf = pdfium.PdfDocument(f)
        except pdfium.PdfiumError as exc:
            text = str(exc)
            if "password" in text.lower():
                raise MediaError(self.path, "the PDF is encrypted (password protected); "
                                            "save an unprotected copy") from None
            # PDFium also refuses a well-formed PDF with zero pages as a "data format error".
            raise MediaError(self.path, f"broken or truncated PDF, or one without pages: {text}") from None
        self.page_count = len(self._pdf)

    def _open_tiff(self, f: BinaryIO) -> None:
        self.format = "tiff"
        f.seek(0)
        try:
            self._tiff = Image.open(f)  # the first page's header; each page is held to max_page_pixels
            self.page_count = frame_count(self._tiff, self.path)
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise
            raise broken(self.path, "corrupt or truncated TIFF", exc) from None

    def page(self, index: int) -> tuple[Image.Image, str | None]:
        """The page as an upright RGB image, and its PDF text layer (None for a TIFF)."""
        if self._pdf is not None:
            return self._pdf_page(index)
        assert self._tiff is not None
        try:
            self._tiff.seek(index)
            self._check_pixels(index, *self._tiff.size)
            img = self._tiff.copy()
            return upright_rgb(img), None
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged page makes Pillow raise
            raise broken(self.path, f"page {index + 1}: cannot decode", exc) from None

    def _pdf_page(self, index: int) -> tuple[Image.Image, str | None]:

        try:
            page = self._pdf[index]
            w_pt, h_pt = page.get_size()
            scale = self.limits.dpi / 72
            self._check_pixels(index, round(w_pt * scale), round(h_pt * scale))
            img = page.render(scale=scale).to_pil().convert("RGB")
            textpage = page.get_textpage()
            text = textpage.get_text_range()
            textpage.close()
            page.close()
        except Exception as exc:  # noqa: BLE001 - a damaged page, whatever PDFium or Pillow raise
            raise broken(self.path, f"page {index + 1}: cannot render", exc) from None
        return img, text.replace("\r\n", "\n").strip()

    def _check_pixels(self, index: int, w: int, h: int) -> None:
        limit, what, key = self.limits.max_page_pixels, f"page {index + 1}:", "document.max_page_pixels"
        if self._pdf is not None:  # a PDF page's size comes from the dpi it is rendered at
            check_pixels(self.path, w, h, limit, what, key, fix="lower document.dpi")
        else:
            check_pixels(self.path, w, h, limit, what, key)

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None
        if self._own is not None:
            self._own.close()
            self._own = None

    def source_info(self, st: os.stat_result, sha256: str) -> SourceInfo:
        return source_info(self.path, st, sha256, "document", 0, 0, pages=self.page_count, format=self.format,
                           dpi=self.limits.dpi)


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
