"""``ocr``: all text in the image, line breaks kept, as plain text."""

from smolvlm_watch import hookimpl
from smolvlm_watch.tasks import Task


class Ocr(Task):
    name = "ocr"
    version = "1"
    description = "extracts all text, keeping line breaks (also Cyrillic); written to a .txt sidecar"
    default_prompt = "Extract all text from this image. Keep the line breaks."
    default_max_new_tokens = 512

    def parse(self, answers, spec):
        lines = [line.rstrip() for line in answers[0].text.strip("\n").splitlines()]
        return "\n".join(lines).strip()


@hookimpl
def register_tasks(register):
    register(Ocr())
