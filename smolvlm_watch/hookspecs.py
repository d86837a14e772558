"""The plugin hooks. Each hook's docstring is its reference manual.

Plugins implement hooks with ``@smolvlm_watch.hookimpl`` and are found three ways: the built-ins
listed in ``smolvlm_watch.plugins.DEFAULT_PLUGINS``, installed packages that declare an entry
point in the ``smolvlm_watch`` group, and modules named in the config's ``plugins:`` list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from .engine import Backend
    from .sidecar import Writer
    from .tasks import Task

hookspec = HookspecMarker("smolvlm_watch")
hookimpl = HookimplMarker("smolvlm_watch")


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Register task plugins: the questions asked about each file.

    Call ``register(task)`` once per task, with an instance of a subclass of
    ``smolvlm_watch.tasks.Task``. The task's ``name`` is what configs list under a watch's
    ``tasks``; it must be unique across all plugins (a clash fails at start with both names).
    Return value: ignored.

    A task only describes the work: ``requests(media, spec)`` returns the runtime requests to run
    for a file (conversation, generation and image settings) and ``parse(answers, spec, media)`` turns
    the model's answers into the JSON-able result stored in the sidecar. The runner calls each
    task itself, so an exception in one task is recorded as that task's ``error`` and the other
    tasks of the file still run. ``requests`` may also be called ahead of time from a prefetch
    thread (to prepare the images while the model is busy), so build the requests from ``media``
    and ``spec`` alone, without state that other calls change.
    """


@hookspec
def register_writers(register: Callable[[Writer], None]) -> None:
    """Register output writers: the sidecar files written for each processed file.

    Call ``register(writer)`` once per writer, with an instance of a subclass of
    ``smolvlm_watch.sidecar.Writer``. Its ``name`` is what configs list under a watch's
    ``outputs``; it must be unique across all plugins. Return value: ignored.

    ``writer.write(record, target)`` receives the finished ``SidecarRecord`` (source, model, and
    each task's result or error) and a ``Target`` saying where outputs go; it stages each file
    through ``target.write_text(path, text)`` (which refuses a file smolvlm-watch did not write)
    or, for a format it merges into itself (XMP), ``target.write_bytes(path, data)``, and returns
    ``{path: sha256}`` of what it staged. The pipeline then commits every writer's files as one
    write set that a crash cannot leave half-recorded; an output an earlier run wrote and this
    run does not stage is removed (when it still holds our bytes).
    """


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register model backends: what answers the tasks' requests.

    Call ``register(backend)`` once per backend, with a ``smolvlm_watch.engine.Backend``: its
    ``name`` is what ``model.backend`` selects; ``model`` declares its keys (a frozen subclass
    of ``ModelConfig`` whose fields are ``settings.setting(...)``, written flat under ``model:``,
    checked like the core's, any other key refused); ``create(model, runtime)`` gets that
    class's instance and returns an object implementing ``smolvlm_watch.engine.Engine`` (not
    loaded yet); ``check(model)`` returns what else is wrong with the settings, each with its
    key path (checked by ``config check`` and at start); ``doctor(config)`` returns the
    ``engine.Check`` lines ``doctor`` prints for it. Built in: ``transformers`` (in-process) and ``openai`` (an
    OpenAI-compatible server); an in-process vLLM, OpenVINO or llama.cpp engine is a plugin.
    Return value: ignored.

    An engine answers every request of ``generate(requests)`` with an ``Answer`` (a request that
    fails gets one with ``error``: only ``Interrupted`` is raised, after ``cancel()``, and its
    kind ``Unreachable`` when a server it depends on cannot be reached: the daemon then gives
    the files back uncharged and calls ``probe()``, with back-off, until it returns None),
    reports ``max_batch()`` and ``video_sampling()``, and says with ``prepares_ahead`` whether
    ``preprocess(requests)`` is worth calling from the prefetch threads.
    """
