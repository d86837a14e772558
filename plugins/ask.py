"""``ask``: a question the user writes in the config (visual question answering)."""

from smolvlm_watch import hookimpl
from smolvlm_watch.tasks import Task, TaskSpec


class Ask(Task):
    name = "ask"
    version = "1"
    description = "answers the question configured as tasks.ask.prompt (or per watch)"
    default_prompt = ""
    default_max_new_tokens = 64
    media_kinds = frozenset({"image", "video", "document"})

    def check_spec(self, spec: TaskSpec):
        if not spec.prompt.strip():
            return ["no question configured: set tasks.ask.prompt, or give the watch "
                    "`- ask: {prompt: \"...\"}` in its tasks"]
        return []


@hookimpl
def register_tasks(register):
    register(Ask())
