"""The built-in writers: ``json`` (the full sidecar) and ``txt`` (OCR text, optional captions)."""

import json
from pathlib import Path

from smolvlm_watch import __version__, hookimpl, media, xmp
from smolvlm_watch.media.video import timestamp_label
from smolvlm_watch.sidecar import (SidecarError, SidecarRecord, Target, Writer, read_json, read_regular, render_json,
                                  sha256_bytes)


class JsonWriter(Writer):
    """``photo.jpg.smolvlm.json``: source, model, and every task's result or error."""

    name = "json"
    description = "the full sidecar, photo.jpg.smolvlm.json"

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        path = target.json_path
        read_json(path)  # raises when a foreign file sits at our name
        return {path: target.write_bytes(path, render_json(record))}


class TextWriter(Writer):
    """``photo.jpg.txt`` with the OCR text; with ``caption_txt``, ``photo.txt`` with the caption
    (the same-stem convention dataset tools such as kohya expect)."""

    name = "txt"
    description = "OCR text as photo.jpg.txt; caption as photo.txt when outputs.caption_txt is on"

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        written = {}
        text = record.by_role("text")
        if isinstance(text, list):  # a video: text per timestamp
            text = "\n".join(f"[{timestamp_label(item['timestamp'])}] {item['text']}" for item in text)
        if isinstance(text, str):
            path = target.path(target.output.ocr_suffix)
            written[path] = target.write_text(path, text)
        caption = record.by_role("description")
        if target.output.caption_txt and isinstance(caption, str):
            path = target.path(".txt", replace_extension=True)
            written[path] = target.write_text(path, caption)
        return written


class XmpWriter(Writer):
    """``photo.jpg.xmp`` (or ``photo.xmp``): caption, tags and OCR merged into the XMP sidecar that
    darktable, digiKam, Immich and Lightroom read; everything already in it is kept."""

    name = "xmp"
    description = "merges caption/tags/OCR into photo.jpg.xmp for photo managers"
    merges = (".xmp",)

    def unmerge(self, data: bytes) -> bytes | None:
        try:
            return xmp.unmerge(data)
        except xmp.XmpError:
            return data  # not XMP we can read any more: left as it is

    def write(self, record: SidecarRecord, target: Target) -> dict[Path, str]:
        path = target.path(".xmp", replace_extension=target.output.xmp_replace_extension)
        try:
            existing = read_regular(path)
        except FileNotFoundError:
            existing = None  # a new sidecar: it starts with what the photo itself says
        own = media.embedded(target.media) if existing is None else None
        tags, ocr = record.by_role("keywords"), record.by_role("text")
        if isinstance(ocr, list):
            ocr = "\n".join(item["text"] for item in ocr)
        prompts = {name: entry.get("prompt") for name, entry in sorted(record.tasks.items()) if "prompt" in entry}
        provenance = {
            **({xmp.CREATED: "True"} if existing is None else {}),  # kept by later merges: it was ours alone
            "Generator": f"smolvlm-watch {__version__}",
            "Model": record.model.get("id"),
            "ModelRevision": record.model.get("revision"),
            "PromptHash": sha256_bytes(json.dumps(prompts, sort_keys=True).encode())[:16],
            "PluginVersions": ", ".join(f"{name}={entry.get('plugin_version')}"
                                        for name, entry in sorted(record.tasks.items())),
        }
        context = record.extra.get("context") or {}
        # the capture time of a photo is in its own EXIF already; a video's comes from its container
        taken = context.get("taken_at") if record.source.get("kind") == "video" else None
        try:
            packet = xmp.seeded(own.xmp, own.description, own.keywords) if own is not None else None
            data = xmp.merge(existing, record.by_role("description"), tags if isinstance(tags, list) else None,
                             ocr if isinstance(ocr, str) else None, provenance, target.output.xmp_keyword_parent,
                             packet, place=context.get("place"), taken_at=taken)
        except xmp.XmpError as exc:
            raise SidecarError(f"{path}: {exc}; the file is left alone (fix or move it away)") from None
        return {path: target.write_bytes(path, data)}


@hookimpl
def register_writers(register):
    register(JsonWriter())
    register(TextWriter())
    register(XmpWriter())
