"""``caption``: a detailed description of the image."""

from smolvlm_watch import hookimpl
from smolvlm_watch.config import ImageSettings
from smolvlm_watch.tasks import Task


class Caption(Task):
    name = "caption"
    role = "description"
    version = "1"
    description = "a detailed description of the image or video"
    default_prompt = "Describe this image in detail."
    default_max_new_tokens = 128
    # A caption needs the whole picture, not the fine print: one tile is ~13x cheaper on CPU.
    default_image = ImageSettings(splitting=False)
    media_kinds = frozenset({"image", "video", "document"})


@hookimpl
def register_tasks(register):
    register(Caption())
