"""The built-in writers: ``json`` (the full sidecar) and ``txt`` (OCR text, optional captions)."""

from pathlib import Path

from smolvlm_watch import hookimpl
from smolvlm_watch.video import timestamp_label
from smolvlm_watch.sidecar import SidecarRecord, Target, Writer, atomic_write, read_json, render_json, sha256_bytes


class JsonWriter(Writer):
    """``photo.jpg.smolvlm.json``: source, model, and every task's result or error."""

    name = "json"
    description = "the full sidecar, photo.jpg.smolvlm.json"

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        path = target.json_path
        read_json(path)  # raises when a foreign file sits at our name
        data = render_json(record)
        atomic_write(path, data)
        return {path: sha256_bytes(data)}


class TextWriter(Writer):
    """``photo.jpg.txt`` with the OCR text; with ``caption_txt``, ``photo.txt`` with the caption
    (the same-stem convention dataset tools such as kohya expect)."""

    name = "txt"
    description = "OCR text as photo.jpg.txt; caption as photo.txt when outputs.caption_txt is on"

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        written = {}
        text = record.result("ocr")
        if isinstance(text, list):  # a video: text per timestamp
            text = "\n".join(f"[{timestamp_label(item['timestamp'])}] {item['text']}" for item in text)
        if isinstance(text, str):
            path = target.path(target.output.ocr_suffix)
            written[path] = target.write_text(path, text)
        caption = record.result("caption")
        if target.output.caption_txt and isinstance(caption, str):
            path = target.path(".txt", replace_extension=True)
            written[path] = target.write_text(path, caption)
        return written


@hookimpl
def register_writers(register):
    register(JsonWriter())
    register(TextWriter())
