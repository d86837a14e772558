"""``ocr``: all text in the image, line breaks kept, as plain text; on a video, per timestamp."""

from smolvlm_watch import hookimpl
from smolvlm_watch.runtime import Request, question
from smolvlm_watch.tasks import Task


def clean(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip()


class Ocr(Task):
    name = "ocr"
    version = "1"
    description = "extracts all text, keeping line breaks (also Cyrillic); written to a .txt sidecar"
    default_prompt = "Extract all text from this image. Keep the line breaks."
    default_max_new_tokens = 512
    media_kinds = frozenset({"image", "video"})

    def requests(self, media, spec):
        """On a video, one question per sampled frame (the runtime batches them)."""
        if media.kind != "video":
            return super().requests(media, spec)
        return [Request(images=(frame,), messages=question(spec.prompt), generation=spec.generation,
                        image=spec.image) for frame in media.images]

    def parse(self, answers, spec, media):
        """Text; on a video, [{timestamp, text}] with repeats of the previous frame's text dropped."""
        if media.kind != "video":
            return clean(answers[0].text)
        out, previous = [], None
        for t, answer in zip(media.clip.timestamps, answers):
            text = clean(answer.text)
            if text and text != previous:
                out.append({"timestamp": t, "text": text})
            previous = text
        return out


@hookimpl
def register_tasks(register):
    register(Ocr())
