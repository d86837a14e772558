"""``tags``: keywords, parsed into a clean, de-duplicated, lower-cased list."""

import re

from smolvlm_watch import hookimpl
from smolvlm_watch.config import ImageSettings
from smolvlm_watch.tasks import Option, Task

_SPLIT = re.compile(r"[,;\n]|\s+-\s+|\u3001")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_EDGE = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def parse_tags(text: str, max_tags: int, vocabulary=None) -> list[str]:
    """Keywords from free text: split on commas, semicolons and lines, bullets and quotes stripped,
    lower-cased, de-duplicated in order, optionally limited to an allowed vocabulary."""
    allowed = {v.lower() for v in vocabulary} if vocabulary else None
    seen, tags = set(), []
    for part in _SPLIT.split(text):
        tag = _EDGE.sub("", _BULLET.sub("", part)).lower()
        tag = re.sub(r"\s+", " ", tag)
        if not tag or len(tag) > 64 or tag in seen or (allowed is not None and tag not in allowed):
            continue
        seen.add(tag)
        tags.append(tag)
        if len(tags) >= max_tags:
            break
    return tags


class Tags(Task):
    name = "tags"
    role = "keywords"
    version = "1"
    description = "keywords as a lower-cased, de-duplicated list (options: max_tags, vocabulary)"
    default_prompt = "List keywords that describe this image, separated by commas."
    default_max_new_tokens = 64
    default_image = ImageSettings(splitting=False)
    default_options = {"max_tags": 20, "vocabulary": None}
    options_schema = {**Task.options_schema,
                      "max_tags": Option(int, minimum=1, help="keep at most this many tags"),
                      "vocabulary": Option(list, nullable=True, help="keep only these tags (a list of words)")}
    media_kinds = frozenset({"image", "video", "document"})

    def parse(self, answers, spec, media):
        opts = spec.options
        return parse_tags(answers[0].text, int(opts.get("max_tags") or 20), opts.get("vocabulary"))


@hookimpl
def register_tasks(register):
    register(Tags())
