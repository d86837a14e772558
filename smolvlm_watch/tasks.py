"""Tasks: what to ask the model about a file, and how to read its answer.

A task never touches the model. It turns decoded media into engine requests and the engine's
answers into a result; ``run_units`` gathers every task's requests for every unit of a batch
of files into ONE list for the engine (so it can batch them) and calls each task's hooks itself,
so a failing task is recorded as that task's error while the others complete.

A task declares its options (``options_schema``: checked, with their key paths, before any
file runs) and, for documents, whether it runs on every page (``per_page``), what it puts into
a page's record (``page_fields``) and how the pages' results make one (``combine_pages``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import prompts
from .config import ImageSettings, TaskConfig
from .engine import Answer, Engine, GenerationSettings, Request, fingerprint, question
from .media import Media
from .search import Passage, default_passages


@dataclass(frozen=True)
class Option:
    """One option a task takes (``tasks.NAME.options.KEY``, or ``tasks.NAME.KEY``): its type
    (``int``, ``float``, ``bool``, ``str``, ``list`` of strings, or a tuple of allowed strings),
    a minimum for numbers, whether ``null`` is allowed, and what it does."""

    kind: Any
    minimum: float | None = None
    nullable: bool = False
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if value is None:
            return None if self.nullable else f"expected {self.expected()}, got null"
        if isinstance(self.kind, tuple):
            return None if value in self.kind else f"expected one of {', '.join(self.kind)}, got {value!r}"
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
            list: isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[self.kind]
        if ok and (self.minimum is None or value >= self.minimum):
            return None
        return f"expected {self.expected()}, got {value!r}"

    def expected(self) -> str:
        names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                 list: "a list of strings"}
        text = names.get(self.kind, "a value")
        if self.minimum is not None:
            text += f" >= {self.minimum:g}"
        return text + (" or null" if self.nullable else "")


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
    # Options every task takes; a subclass adds its own: {**Task.options_schema, "x": Option(int)}.
    options_schema: dict[str, Option] = {
        "min_new_tokens": Option(int, minimum=1, nullable=True, help="generate at least this many tokens"),
        "loop_guard": Option(bool, help="end an answer whose tail repeats one short unit (default true)"),
    }
    per_page: bool = False  # on a document: run on every page (batched, resumable), not the first
    # What writers may take this task's result as (``SidecarRecord.by_role``): "description" (a
    # caption: XMP dc:description, the caption .txt), "keywords" (a list: XMP keywords), "text"
    # (text read off the media: the OCR .txt, XMP's OCR field); None for anything else.
    role: str | None = None

    def spec(self, config: TaskConfig) -> TaskSpec:
        return TaskSpec(
            prompt=config.prompt or self.default_prompt,
            max_new_tokens=config.max_new_tokens or self.default_max_new_tokens,
            image=config.image.over(self.default_image),
            options={**self.default_options, **config.options},
        )

    def check_options(self, options: dict[str, Any], where: str, direct: frozenset[str] = frozenset()) -> list[str]:
        """Problems with ``options`` (given under ``where``.options, or at ``where`` itself for the
        names in ``direct``), each with its key path and what is allowed."""
        known = {**{k: None for k in self.default_options}, **self.options_schema}
        problems = []
        for key, value in options.items():
            at = f"{where}.{key}" if key in direct else f"{where}.options.{key}"
            if key not in known:
                listed = ", ".join(sorted(known)) or "none"
                problems.append(f"{at}: unknown option of task {self.name!r} (its options: {listed})")
            elif (option := known[key]) is not None and (why := option.problem(value)) is not None:
                problems.append(f"{at}: {why}")
        return problems

    def check_spec(self, spec: TaskSpec) -> list[str]:
        """What makes these effective settings unusable, found before any file runs (say, a
        question the task needs and nobody wrote); each problem in words, without a key path."""
        return []

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

    def page_fields(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """What this task's entry for one page puts into that page's record in the sidecar's
        ``pages`` list. None (the default): the entry goes under the record's ``tasks``."""
        return None

    def passages(self, entry: dict[str, Any], pages: Sequence[dict[str, Any]]) -> list[Passage]:
        """What of this task's sidecar entry the search index holds: by default the strings and
        lists of strings of its ``result``, page by page where its results are on a document's
        pages, frame by frame for results shaped ``[{"timestamp", "text"}]``. Override to index
        other fields, or nothing (``[]``)."""
        return default_passages(self.name, entry, pages)

    def combine_pages(self, pages: list[dict[str, Any]]) -> Any:
        """The document's result from its page records: by default each page's result, in order
        (None where a page had none)."""
        return [((page.get("tasks") or {}).get(self.name) or {}).get("result") for page in pages]


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
    gate: str | None = None  # ``when: text-seen``: the yes/no question asked first about a photo
    fingerprint_of: Callable[[str], str] | None = field(default=None, compare=False, repr=False)  # of a prompt

    @property
    def templated(self) -> bool:
        """Its prompt has placeholders a file fills (``prompts``)."""
        return prompts.templated(self.spec.prompt)

    def for_file(self, known: Mapping[str, Any]) -> Planned:
        """The task as one file asks it: its prompt rendered with the file's values, and the
        fingerprint of that prompt, so a file is stale only when its own question changed."""
        if not self.templated or self.fingerprint_of is None:
            return self
        prompt = prompts.render(self.spec.prompt, known)
        return replace(self, spec=replace(self.spec, prompt=prompt), fingerprint=self.fingerprint_of(prompt))


def plan(task: Task, config: TaskConfig, plugin: str, plugin_version: str, model_id: str,
         model_revision: str | None, model_image: ImageSettings) -> Planned:
    spec = task.spec(config)
    gate = (config.gate_prompt or GATE_PROMPT) if config.when == "text-seen" else None

    def fingerprint_of(prompt: str) -> str:
        return fingerprint(task.name, plugin, plugin_version, prompt, spec.generation.as_dict(),
                           spec.image.over(model_image).as_dict(), spec.options, model_id, model_revision,
                           *([config.video] if config.video else []),
                           *([{"gate": gate, "tokens": GATE_TOKENS, "image": GATE_IMAGE.as_dict()}] if gate else []))

    return Planned(task=task, spec=spec, plugin=plugin, plugin_version=plugin_version,
                   fingerprint=fingerprint_of(spec.prompt), video=dict(config.video), gate=gate,
                   fingerprint_of=fingerprint_of)


# --- the gate (``tasks.NAME.when: text-seen``) -------------------------------------------------------

GATE_PROMPT = "Is there any readable text in this image? Answer yes or no."
GATE_TOKENS = 3
GATE_IMAGE = ImageSettings(splitting=False)  # one tile: what caption and tags look at, one vision pass for all
GATE_SUFFIX = ":gate"
# For bench/throughput.py only, never set by a config: with random weights the gate's answer is
# noise, so the bench decides it from the generated photo's truth (media -> text seen?) and
# measures the mechanism's cost, not the model's judgement.
GATE_ORACLE: Callable[[Media], bool] | None = None


class _GateQuestion(Task):
    """The yes/no question asked about a photo before a ``text-seen`` task, in the first round
    with the other tasks (same tile, same vision pass), decoding a few tokens."""

    media_kinds = frozenset({"image"})

    def __init__(self, gated: str):
        self.name = gated + GATE_SUFFIX


def gate_probe(p: Planned) -> Planned:
    """The gate question of a ``text-seen`` task, planned as a task of its own."""
    assert p.gate is not None
    spec = TaskSpec(prompt=p.gate, max_new_tokens=GATE_TOKENS, image=GATE_IMAGE, options={"loop_guard": False})
    return Planned(task=_GateQuestion(p.task.name), spec=spec, plugin="smolvlm_watch", plugin_version="1",
                   fingerprint="")


def text_seen(answer: str | None, media: Media) -> bool:
    """Whether the gate lets the task run: only a clear "no" (any case, with punctuation) keeps
    it from running; a failed or garbled answer runs it, so text is never skipped on noise."""
    if GATE_ORACLE is not None:
        return GATE_ORACLE(media)
    words = re.sub(r"[^a-z]+", " ", (answer or "").lower()).split()
    return not (words and words[0] == "no")


_ABSENT: Any = object()


@dataclass(frozen=True)
class TaskEntry:
    """A task's entry in the sidecar's ``tasks``: a result, an error, or why it was skipped.
    Built here only (``answered``, ``failed``, ``skipped``, ``paged``); ``as_json`` writes the
    keys in their one order, leaving out what an entry of its kind does not have."""

    result: Any = _ABSENT
    raw: Any = _ABSENT
    error: Any = _ABSENT
    skipped: Any = _ABSENT
    gate: Any = _ABSENT
    prompt: Any = _ABSENT
    generation: Any = _ABSENT
    plugin: Any = _ABSENT
    plugin_version: Any = _ABSENT
    seconds: Any = _ABSENT
    fingerprint: Any = _ABSENT
    tokens: Any = _ABSENT
    pages: Any = _ABSENT

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not _ABSENT}

    @classmethod
    def answered(cls, p: Planned, result: Any, raw: Any, seconds: float, tokens: int,
                 applied: dict[str, Any] | None = None) -> TaskEntry:
        """``applied``: the image settings the backend really used, when they are not the task's
        (a server that cannot take per-request settings): the sidecar never claims otherwise."""
        settings = _settings(p)
        if applied is not None:
            settings["generation"]["image"] = applied
        return cls(result=result, raw=raw, **settings, plugin=p.plugin, plugin_version=p.plugin_version,
                   seconds=round(seconds, 4), fingerprint=p.fingerprint, tokens=tokens)

    @classmethod
    def paged(cls, p: Planned, result: Any, seconds: float, pages: int) -> TaskEntry:
        """A per-page task's entry for a whole document (its pages' records hold the rest)."""
        return cls(result=result, **_settings(p), plugin=p.plugin, plugin_version=p.plugin_version,
                   seconds=round(seconds, 4), fingerprint=p.fingerprint, pages=pages)

    @classmethod
    def failed(cls, p: Planned, message: str) -> TaskEntry:
        return cls(error=message, plugin=p.plugin, plugin_version=p.plugin_version, fingerprint=p.fingerprint)

    @classmethod
    def gated_out(cls, p: Planned, answer: str) -> TaskEntry:
        """A ``text-seen`` task its gate answered "no" for: not run, and the sidecar says why."""
        return cls(skipped=NO_TEXT_SEEN, gate={"prompt": p.gate, "answer": answer}, plugin=p.plugin,
                   plugin_version=p.plugin_version, fingerprint=p.fingerprint)

    @classmethod
    def skipped_for(cls, p: Planned, kind: str) -> TaskEntry:
        """The entry of a task that does not accept this kind of media."""
        return cls(skipped=f"task {p.task.name!r} does not accept {kind} files", plugin=p.plugin,
                   plugin_version=p.plugin_version)


NO_TEXT_SEEN = "no text seen"


def _settings(p: Planned) -> dict[str, Any]:
    return {"prompt": p.spec.prompt, "generation": {**p.spec.generation.as_dict(), "image": p.spec.image.as_dict()}}


@dataclass(frozen=True)
class Outcome:
    """One task's entry, by task name."""

    name: str
    data: dict[str, Any]


def skipped(p: Planned, kind: str) -> Outcome:
    return Outcome(p.task.name, TaskEntry.skipped_for(p, kind).as_json())


def _failed(p: Planned, message: str) -> Outcome:
    return Outcome(p.task.name, TaskEntry.failed(p, message).as_json())


@dataclass(frozen=True)
class Unit:
    """Model work for one file: some of its tasks about one decoded piece of it (a photo, a
    video at one sampling, a document page or its first pages together). ``tag`` is the file's
    own, to fold the outcomes back (a page number, a sampling)."""

    media: Media
    tasks: tuple[Planned, ...]
    tag: Any = None


def _ask(media: Media, p: Planned) -> list[Request] | Outcome:
    """A task's requests about ``media``, or the outcome that stands instead: skipped (it does not
    take this kind of media) or the error its ``requests`` raised."""
    if media.kind not in p.task.media_kinds:
        return skipped(p, media.kind)
    try:
        return list(p.task.requests(media, p.spec))
    except Exception as exc:  # noqa: BLE001 - a broken task must not stop the others
        return _failed(p, f"{type(exc).__name__} in {p.task.name}.requests: {exc}")


def preprocess(units: Sequence[Unit], engine: Engine) -> None:
    """Prepare what the model will need for these units' questions (resized, tiled pixels) now,
    in the caller's thread: the prefetch threads do it while the model answers earlier files. A
    task whose ``requests`` fails here fails again, and is recorded, when it runs."""
    asked = [_ask(u.media, p) for u in units for p in u.tasks]
    engine.preprocess([r for reqs in asked if not isinstance(reqs, Outcome) for r in reqs])


def run_units(units: Sequence[Unit], engine: Engine) -> list[list[Outcome]]:
    """Run every unit's tasks with ONE engine call, so the engine can batch across tasks, pages
    and files. Returns each unit's outcomes in the order of its tasks."""
    outcomes: list[dict[str, Outcome]] = [{} for _ in units]
    asked: list[tuple[int, Planned, list[Request]]] = []
    for u, unit in enumerate(units):
        for p in unit.tasks:
            reqs = _ask(unit.media, p)
            if isinstance(reqs, Outcome):
                outcomes[u][p.task.name] = reqs
            else:
                asked.append((u, p, reqs))
    flat = [r for _, _, reqs in asked for r in reqs]
    start = time.perf_counter()
    answers = engine.generate(flat)
    # the call's time apportioned by the steps each answer took (its new tokens, and its prefill):
    # a 3-token gate costs a fraction of a 128-token caption, though both ran in one batch
    steps = [a.new_tokens + 1 for a in answers]
    per_step = (time.perf_counter() - start) / max(sum(steps), 1)
    pos = 0
    for u, p, reqs in asked:
        mine, pos = answers[pos:pos + len(reqs)], pos + len(reqs)
        outcomes[u][p.task.name] = _finish(p, units[u].media, mine, per_step * sum(steps[pos - len(reqs):pos]))
    return [[out[p.task.name] for p in unit.tasks] for out, unit in zip(outcomes, units)]


def _finish(p: Planned, media: Media, answers: list[Answer], seconds: float) -> Outcome:
    failed = [a.error for a in answers if a.error is not None]
    if failed:
        return _failed(p, str(failed[0]))
    try:
        result = p.task.parse(answers, p.spec, media)
    except Exception as exc:  # noqa: BLE001 - a task's parse failing is that task's error
        return _failed(p, f"{type(exc).__name__} in {p.task.name}.parse: {exc}")
    raw: Any = answers[0].text if len(answers) == 1 else [a.text for a in answers]
    entry = TaskEntry.answered(p, result, raw, seconds, sum(a.new_tokens for a in answers),
                               answers[0].image if answers else None)
    return Outcome(p.task.name, entry.as_json())
