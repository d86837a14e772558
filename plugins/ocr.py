"""``ocr``: all text in the image, line breaks kept, as plain text; on a video, per timestamp."""

from smolvlm_watch import hookimpl
from smolvlm_watch.engine import Request, question
from smolvlm_watch.tasks import Option, Task

TEXT_LAYER_MIN_CHARS = 16  # "auto": a page with at least this much text uses its text layer


def clean(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip()


class Ocr(Task):
    name = "ocr"
    role = "text"
    version = "1"
    description = "extracts all text, keeping line breaks (also Cyrillic); written to a .txt sidecar"
    default_prompt = "Extract all text from this image. Keep the line breaks."
    default_max_new_tokens = 512
    default_options = {"use_text_layer": "never"}
    options_schema = {**Task.options_schema, "use_text_layer": Option(
        ("auto", "never", "always"), help="a PDF page's own text instead of the model's reading: auto uses it when "
                                          f"it holds {TEXT_LAYER_MIN_CHARS}+ characters")}
    media_kinds = frozenset({"image", "video", "document"})
    per_page = True  # every page of a document, each page's text in its record, the whole in one result

    def page_fields(self, entry):
        """A page's record holds its text and where it came from (``ocr``, ``ocr_source``: model
        or text_layer), or the page's error."""
        if "error" in entry:
            return {"error": f"ocr: {entry['error']}"}
        result = entry.get("result")
        return {"ocr": result["text"], "ocr_source": result["source"]} if isinstance(result, dict) else {}

    def combine_pages(self, pages):
        """The document's text, pages separated by a form feed, as pdftotext writes it."""
        return "\f".join(page.get("ocr", "") for page in pages)

    def requests(self, media, spec):
        """On a video, one question per sampled frame (the runtime batches them); on a document
        page with a usable text layer (``use_text_layer``), none at all."""
        if media.kind == "document" and _text_layer(media, spec) is not None:
            return []
        if media.kind != "video":
            return super().requests(media, spec)
        return [Request(images=(frame,), messages=question(spec.prompt), generation=spec.generation,
                        image=spec.image, frames=True) for frame in media.images]

    def parse(self, answers, spec, media):
        """Text; on a document page {text, source}; on a video [{timestamp, text}], with repeats of
        the previous frame's text dropped."""
        if media.kind == "document":
            layer = _text_layer(media, spec)
            if layer is not None:
                return {"text": layer, "source": "text_layer"}
            return {"text": clean(answers[0].text), "source": "model"}
        if media.kind != "video":
            return clean(answers[0].text)
        out, previous = [], None
        for t, answer in zip(media.clip.timestamps, answers):
            text = clean(answer.text)
            if text and text != previous:
                out.append({"timestamp": t, "text": text})
            previous = text
        return out


def _text_layer(media, spec):
    """The page's PDF text layer when the settings say to use it: ``always``, or ``auto`` when
    it holds real text; None means ask the model."""
    mode = spec.options.get("use_text_layer", "never")
    layer = media.info.extra.get("text_layer")
    if layer is None or mode == "never":
        return None
    if mode == "always" or len("".join(layer.split())) >= TEXT_LAYER_MIN_CHARS:
        return layer
    return None


@hookimpl
def register_tasks(register):
    register(Ocr())
