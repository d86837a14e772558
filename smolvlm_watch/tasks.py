"""Tasks: what to ask the model about a file, and how to read its answer.

A task never touches the model. It turns a decoded file into runtime requests and the runtime's
answers into a result; ``run_tasks`` gathers every task's requests for a file into ONE list for
the runtime (so it can batch them) and calls each task's hooks itself, so a failing task is
recorded as that task's error while the others complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

from .config import ImageSettings, TaskConfig
from .media import Media
from .engine import Answer, Engine, GenerationSettings, Request, fingerprint, question


@dataclass(frozen=True)
class TaskSpec:
    """A task's effective settings for one watch: config laid over the plugin's defaults."""

    prompt: str
    max_new_tokens: int
    image: ImageSettings
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens,
                                  min_new_tokens=self.options.get("min_new_tokens"),
                                  loop_guard=self.options.get("loop_guard", True))


class Task:
    """Base class for task plugins. Subclasses set the class attributes and may override
    ``requests`` (to ask several questions) and ``parse`` (to structure the answer)."""

    name: str = ""
    version: str = "1"
    description: str = ""
    default_prompt: str = ""
    default_max_new_tokens: int = 256
    default_image: ImageSettings = ImageSettings()
    default_options: dict[str, Any] = {}
    media_kinds: frozenset[str] = frozenset({"image"})

    def spec(self, config: TaskConfig) -> TaskSpec:
        return TaskSpec(
            prompt=config.prompt or self.default_prompt,
            max_new_tokens=config.max_new_tokens or self.default_max_new_tokens,
            image=config.image.over(self.default_image),
            options={**self.default_options, **config.options},
        )

    def requests(self, media: Media, spec: TaskSpec) -> list[Request]:
        """The questions to ask about ``media``: by default the prompt once, about the video as
        SmolVLM2's video conversation, or about the first image."""
        if media.kind == "video":
            return [Request(images=(), video=media.clip, messages=question(spec.prompt, video=True),
                            generation=spec.generation, image=spec.image)]
        images = media.images if media.kind == "document" else media.images[:1]  # pages in one question
        return [Request(images=images, messages=question(spec.prompt, images=len(images)),
                        generation=spec.generation, image=spec.image)]

    def parse(self, answers: Sequence[Answer], spec: TaskSpec, media: Media) -> Any:
        """The result stored in the sidecar: by default the first answer's text, trimmed."""
        return answers[0].text.strip()


@dataclass(frozen=True)
class Planned:
    """A task chosen for a file, with its settings and the fingerprint of everything that shapes
    its result (plugin version, prompt, generation and image settings, model)."""

    task: Task
    spec: TaskSpec
    plugin: str
    plugin_version: str
    fingerprint: str
    video: dict[str, Any] = field(default_factory=dict)  # the task's own video sampling, if any


def plan(task: Task, config: TaskConfig, plugin: str, plugin_version: str, model_id: str,
         model_revision: str | None, model_image: ImageSettings) -> Planned:
    spec = task.spec(config)
    fp = fingerprint(task.name, plugin, plugin_version, spec.prompt, spec.generation.as_dict(),
                     spec.image.over(model_image).as_dict(), spec.options, model_id, model_revision,
                     *([config.video] if config.video else []))
    return Planned(task=task, spec=spec, plugin=plugin, plugin_version=plugin_version, fingerprint=fp,
                   video=dict(config.video))


@dataclass(frozen=True)
class Outcome:
    """One task's entry in the sidecar: a result, or an error, or a reason it was skipped."""

    name: str
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        return "error" not in self.data and "skipped" not in self.data


def skipped(p: Planned, kind: str) -> Outcome:
    """The entry of a task that does not accept this kind of media."""
    return Outcome(p.task.name, {"skipped": f"task {p.task.name!r} does not accept {kind} files",
                                 "plugin": p.plugin, "plugin_version": p.plugin_version})


def _error(p: Planned, message: str) -> Outcome:
    return Outcome(p.task.name, {"error": message, "plugin": p.plugin, "plugin_version": p.plugin_version,
                                 "fingerprint": p.fingerprint})


def _ask(media: Media, p: Planned) -> list[Request] | Outcome:
    """A task's requests about ``media``, or the outcome that stands instead: skipped (it does not
    take this kind of media) or the error its ``requests`` raised."""
    if media.kind not in p.task.media_kinds:
        return skipped(p, media.kind)
    try:
        return list(p.task.requests(media, p.spec))
    except Exception as exc:  # noqa: BLE001 - a broken task must not stop the others
        return _error(p, f"{type(exc).__name__} in {p.task.name}.requests: {exc}")


def preprocess(media: Media, planned: Sequence[Planned], runtime: Engine) -> None:
    """Prepare what the model will need for these tasks' questions (resized, tiled pixels) now,
    in the caller's thread: the prefetch threads do it while the model answers earlier files. A
    task whose ``requests`` fails here fails again, and is recorded, when it runs."""
    asked = [_ask(media, p) for p in planned]
    runtime.preprocess([r for reqs in asked if not isinstance(reqs, Outcome) for r in reqs])


def run_tasks(media: Media, planned: Sequence[Planned], runtime: Engine) -> list[Outcome]:
    """Run every planned task on one decoded file; one runtime call for all their requests."""
    return run_tasks_many([media], planned, runtime)[0]


def run_tasks_many(medias: Sequence[Media], planned: Sequence[Planned], runtime: Engine) -> list[list[Outcome]]:
    """Run the planned tasks on several media (a document's pages) with ONE runtime call, so the
    runtime can batch across them. Returns each media's outcomes in ``planned`` order."""
    outcomes: list[dict[str, Outcome]] = [{} for _ in medias]
    asked: list[tuple[int, Planned, list[Request]]] = []
    for m, media in enumerate(medias):
        for p in planned:
            reqs = _ask(media, p)
            if isinstance(reqs, Outcome):
                outcomes[m][p.task.name] = reqs
            else:
                asked.append((m, p, reqs))
    flat = [r for _, _, reqs in asked for r in reqs]
    start = time.perf_counter()
    answers = runtime.generate(flat)
    share = (time.perf_counter() - start) / max(len(flat), 1)
    pos = 0
    for m, p, reqs in asked:
        mine, pos = answers[pos:pos + len(reqs)], pos + len(reqs)
        outcomes[m][p.task.name] = _finish(p, medias[m], mine, share * len(reqs))
    return [[out[p.task.name] for p in planned] for out in outcomes]


def _finish(p: Planned, media: Media, answers: list[Answer], seconds: float) -> Outcome:
    failed = [a.error for a in answers if a.error is not None]
    if failed:
        return _error(p, str(failed[0]))
    try:
        result = p.task.parse(answers, p.spec, media)
    except Exception as exc:  # noqa: BLE001 - a task's parse failing is that task's error
        return _error(p, f"{type(exc).__name__} in {p.task.name}.parse: {exc}")
    raw: Any = answers[0].text if len(answers) == 1 else [a.text for a in answers]
    return Outcome(p.task.name, {
        "result": result,
        "raw": raw,
        "prompt": p.spec.prompt,
        "generation": {**p.spec.generation.as_dict(), "image": p.spec.image.as_dict()},
        "plugin": p.plugin,
        "plugin_version": p.plugin_version,
        "seconds": round(seconds, 4),
        "fingerprint": p.fingerprint,
        "tokens": sum(a.new_tokens for a in answers),
    })
