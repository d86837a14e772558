"""``ocr``: all text in the image, line breaks kept, as plain text; on a video, per timestamp."""

from smolvlm_watch import hookimpl
from smolvlm_watch.media.document import TEXT_LAYER_MIN_CHARS
from smolvlm_watch.engine import Request, question
from smolvlm_watch.tasks import Task


def clean(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip()


class Ocr(Task):
    name = "ocr"
    version = "1"
    description = "extracts all text, keeping line breaks (also Cyrillic); written to a .txt sidecar"
    default_prompt = "Extract all text from this image. Keep the line breaks."
    default_max_new_tokens = 512
    default_options = {"use_text_layer": "never"}
    media_kinds = frozenset({"image", "video", "document"})

    def requests(self, media, spec):
        """On a video, one question per sampled frame (the runtime batches them); on a document
        page with a usable text layer (``use_text_layer``), none at all."""
        if media.kind == "document" and _text_layer(media, spec) is not None:
            return []
        if media.kind != "video":
            return super().requests(media, spec)
        return [Request(images=(frame,), messages=question(spec.prompt), generation=spec.generation,
                        image=spec.image) for frame in media.images]

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
