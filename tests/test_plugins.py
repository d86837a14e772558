"""Plugins: hook documentation, entry points, config-named modules, isolation of failures."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import make_image, read_sidecar
from smolvlm_watch import hookspecs
from smolvlm_watch.plugins import PluginError, Registry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_hook_is_documented_in_its_docstring_and_readme():
    registry = Registry(entrypoints=False)
    names = [n for n in dir(registry.pm.hook) if not n.startswith("_")]
    assert set(names) >= {"register_tasks", "register_writers"}
    readme = README.read_text(encoding="utf-8")
    for name in names:
        spec = getattr(hookspecs, name)
        doc = inspect.getdoc(spec) or ""
        assert "Return value" in doc and "register(" in doc, f"hook {name} lacks a reference docstring"
        signature = f"{name}({', '.join(inspect.signature(spec).parameters)})"
        assert signature in readme, f"README does not document the hook {signature}"


def test_builtin_tasks_and_writers(run_cli):
    code, out, _ = run_cli("plugins", "--json")
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)}
    assert set(rows) == {("task", "caption"), ("task", "ocr"), ("task", "tags"), ("task", "ask"),
                         ("writer", "json"), ("writer", "txt"), ("writer", "xmp")}
    assert rows[("task", "caption")]["plugin"] == "smolvlm_watch_plugins.caption"


def _make_distribution(root: Path, module: str, body: str) -> Path:
    """A real installed-looking distribution: a module plus .dist-info with an entry point."""
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{module.replace('_', '-')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[smolvlm_watch]\n{module} = {module}\n")
    return root


THIRD_PARTY = '''
from smolvlm_watch import hookimpl
from smolvlm_watch.tasks import Task

class Colours(Task):
    name = "colours"
    version = "0.4"
    default_prompt = "Which colours dominate this image?"
    default_max_new_tokens = 6

    def parse(self, answers, spec, media):
        return {"answer": answers[0].text, "tokens": len(answers[0].token_ids)}

@hookimpl
def register_tasks(register):
    register(Colours())
'''


def test_third_party_plugin_through_entry_point_runs_end_to_end(tmp_path, tiny_model, run_cli, monkeypatch):
    site = _make_distribution(tmp_path / "site", "smolvlm_colours", THIRD_PARTY)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SMOLVLM_WATCH_LOAD_ENTRYPOINTS", "1")
    img = make_image(tmp_path / "in" / "a.png")
    code, out, err = run_cli("process", img, "--model", tiny_model, "--task", "colours", "--task", "caption",
                             "--json")
    assert code == 0, err
    entry = read_sidecar(img)["tasks"]["colours"]
    assert entry["plugin"] == "smolvlm_colours" and entry["plugin_version"] == "0.4"
    assert entry["result"]["tokens"] == 6 and entry["prompt"] == "Which colours dominate this image?"
    code, out, _ = run_cli("plugins", "--json")
    assert any(r["name"] == "colours" and r["plugin"] == "smolvlm_colours" for r in json.loads(out))
    sys.modules.pop("smolvlm_colours", None)


def test_failing_task_is_recorded_and_others_complete(tmp_path, tiny_model, run_cli, write_config, monkeypatch):
    (tmp_path / "brokentask.py").write_text(textwrap.dedent('''
        from smolvlm_watch import hookimpl
        from smolvlm_watch.tasks import Task

        class Broken(Task):
            name = "broken"
            default_prompt = "x"
            def parse(self, answers, spec, media):
                raise RuntimeError("parser exploded")

        @hookimpl
        def register_tasks(register):
            register(Broken())
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    make_image(tmp_path / "inbox" / "a.png")
    cfg = write_config(f"""
model: {{path: {tiny_model}}}
plugins: [brokentask]
tasks: {{broken: {{max_new_tokens: 4}}, caption: {{max_new_tokens: 4}}}}
watches: [{{path: ./inbox, tasks: [broken, caption], outputs: [json]}}]
""")
    code, out, _ = run_cli("process", tmp_path / "inbox", "-c", cfg, "--json")
    assert code == 1
    assert json.loads(out)["failed"][0]["error"] == "broken: RuntimeError in broken.parse: parser exploded"
    doc = read_sidecar(tmp_path / "inbox" / "a.png")
    assert doc["tasks"]["broken"]["error"] == "RuntimeError in broken.parse: parser exploded"
    assert "result" in doc["tasks"]["caption"]
    sys.modules.pop("brokentask", None)


def test_broken_plugin_fails_at_start_with_its_name(tmp_path, monkeypatch, run_cli, write_config):
    (tmp_path / "badplugin.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = write_config("plugins: [badplugin]\nwatches: [./in]\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2
    assert "plugin 'badplugin' failed to import: ImportError: needs libfoo" in err


def test_duplicate_task_names_are_refused():
    from smolvlm_watch import hookimpl
    from smolvlm_watch_plugins.caption import Caption

    class Again:
        @hookimpl
        def register_tasks(self, register):
            register(Caption())

    registry = Registry(entrypoints=False)
    with pytest.raises(PluginError, match="task 'caption' is registered twice"):
        registry.register(Again(), "again")


def test_tags_parser():
    from smolvlm_watch_plugins.tags import parse_tags

    assert parse_tags("Cat, dog; CAT\n- Tree\n2. blue sky.", 10) == ["cat", "dog", "tree", "blue sky"]
    assert parse_tags("a, b, c, d", 2) == ["a", "b"]
    assert parse_tags("cat, dog, whale", 10, vocabulary=["Dog", "whale"]) == ["dog", "whale"]
    assert parse_tags("Кошка, 🐈 Кот", 5) == ["кошка", "кот"]


def test_ask_without_a_question_is_refused_before_the_model_loads(tmp_path, tiny_model, run_cli, monkeypatch):
    """Issue 27, 9: `--task ask` without a question loaded the model, then failed every file."""
    from smolvlm_watch.runtime import Runtime

    monkeypatch.setattr(Runtime, "load", lambda self: (_ for _ in ()).throw(AssertionError("the model was loaded")))
    img = make_image(tmp_path / "a.png")
    code, out, err = run_cli("process", img, "--model", tiny_model, "--task", "ask", "--json")
    assert code == 2 and out == ""
    assert "watches[0].tasks[0] (ask): no question configured: set tasks.ask.prompt" in err


# --- option schemas, checked before any file runs ---------------------------------------------------

@pytest.mark.parametrize("yaml, message", [
    ("tasks: {tags: {options: {max_tags: many}}}", "tasks.tags.options.max_tags: expected an integer >= 1, got 'many'"),
    ("tasks: {tags: {options: {max_tags: 0}}}", "tasks.tags.options.max_tags: expected an integer >= 1, got 0"),
    ('tasks: {tags: {options: {vocabulary: "cat, dog"}}}',
     "tasks.tags.options.vocabulary: expected a list of strings or null, got 'cat, dog'"),
    ("tasks: {ocr: {use_text_layer: sometimes}}",
     "tasks.ocr.use_text_layer: expected one of auto, never, always, got 'sometimes'"),
    ("tasks: {caption: {options: {loop_guard: maybe}}}",
     "tasks.caption.options.loop_guard: expected true or false, got 'maybe'"),
    ("tasks: {caption: {max_tags: 3}}",
     "tasks.caption.max_tags: unknown option of task 'caption' (its options: loop_guard, min_new_tokens)"),
    ("watches:\n  - path: ./p\n    tasks: [caption, {tags: {options: {max_tags: -1}}}]",
     "watches[0].tasks[1].tags.options.max_tags: expected an integer >= 1, got -1"),
    ("model: {backend: vllm}", "model.backend: unknown backend 'vllm' (known: openai, transformers)"),
    ("model: {backend: openai, name: m}", "model.base_url: missing: model.backend openai needs base_url and name"),
])
def test_plugin_options_and_backends_are_checked_with_their_key_path(run_cli, write_config, yaml, message):
    code, out, err = run_cli("config", "check", write_config(yaml + "\n"))
    assert code == 2 and message in err, err


def test_valid_options_pass_and_reach_the_task(run_cli, write_config):
    cfg = write_config("tasks:\n  tags: {options: {max_tags: 3, vocabulary: [cat, dog]}}\n"
                       "  ocr: {use_text_layer: always}\n")
    code, out, _ = run_cli("config", "check", cfg)
    assert code == 0
    assert "max_tags: 3" in out and "use_text_layer: always" in out


# --- a third-party per-page task gets what OCR gets ------------------------------------------------------

PER_PAGE = '''
from smolvlm_watch import hookimpl
from smolvlm_watch.tasks import Task

class Handwriting(Task):
    """Defaults: its page entries go under each page's `tasks`, its result is the list of them."""
    name = "handwriting"
    default_prompt = "Read the handwriting."
    default_max_new_tokens = 3
    media_kinds = frozenset({"image", "document"})
    per_page = True

class Totals(Task):
    """Its own page field and its own way to combine the pages."""
    name = "totals"
    default_prompt = "What is the total?"
    default_max_new_tokens = 2
    media_kinds = frozenset({"document"})
    per_page = True

    def page_fields(self, entry):
        return {"total_chars": len(entry["result"])} if "result" in entry else {}

    def combine_pages(self, pages):
        return sum(page.get("total_chars", 0) for page in pages)

@hookimpl
def register_tasks(register):
    register(Handwriting())
    register(Totals())
'''


def test_a_third_party_per_page_task_gets_page_records_and_a_combined_result(tmp_path, tiny_model, run_cli,
                                                                          write_config, monkeypatch):
    from PIL import Image

    (tmp_path / "pagetasks.py").write_text(PER_PAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    pages = [Image.new("L", (60, 80), 255 - 40 * i) for i in range(3)]
    scan = tmp_path / "in" / "scan.tif"
    scan.parent.mkdir()
    pages[0].save(scan, save_all=True, append_images=pages[1:])
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\nplugins: [pagetasks]\n"
                       "watches:\n  - {path: ./in, tasks: [handwriting, totals, caption], outputs: [json]}\n")
    code, out, err = run_cli("process", scan, "-c", cfg, "--json")
    sys.modules.pop("pagetasks", None)
    assert code == 0, out + err
    doc = read_sidecar(scan)
    records = doc["pages"]
    assert [r["page"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(r) == {"page", "width", "height", "seconds", "total_chars", "tasks"}
        assert set(r["tasks"]) == {"handwriting"} and "result" in r["tasks"]["handwriting"]
    hand, totals = doc["tasks"]["handwriting"], doc["tasks"]["totals"]
    assert hand["result"] == [r["tasks"]["handwriting"]["result"] for r in records] and hand["pages"] == 3
    assert totals["result"] == sum(r["total_chars"] for r in records) and totals["pages"] == 3
    assert "pages" not in doc["tasks"]["caption"]  # a task without per_page looks at the first page only


HANDWRITING = '''
from pathlib import Path
from smolvlm_watch import hookimpl
from smolvlm_watch.sidecar import Writer
from smolvlm_watch.tasks import Task

class Handwriting(Task):
    name = "handwriting"
    role = "text"
    default_prompt = "Transcribe the handwriting."
    default_max_new_tokens = 2

    def parse(self, answers, spec, media):
        return "Dear Ada, see you Sunday"

class Postcard(Writer):
    name = "postcard"

    def write(self, record, target):
        path = target.path(".postcard")
        return {path: target.write_text(path, f"text: {record.by_role('text')}")}

@hookimpl
def register_tasks(register):
    register(Handwriting())

@hookimpl
def register_writers(register):
    register(Postcard())
'''


def test_hook_a_third_party_task_feeds_the_built_in_writers_by_its_role(tmp_path, tiny_model, run_cli, write_config,
                                                                        monkeypatch):
    """Issue 32, 5: the writers asked for result("ocr"), so a third-party text task could not feed
    .txt or the XMP; they ask by role now, and a third-party writer can too."""
    (tmp_path / "handwriting_plugin.py").write_text(HANDWRITING)
    monkeypatch.syspath_prepend(str(tmp_path))
    img = make_image(tmp_path / "cards" / "card.png")
    cfg = write_config(f"model: {{path: {tiny_model}, threads: 1}}\nplugins: [handwriting_plugin]\n"
                       f"watches: [{{path: {tmp_path / 'cards'}, tasks: [handwriting], "
                       "outputs: [json, txt, xmp, postcard]}]\n")
    code, out, err = run_cli("process", img, "-c", cfg, "--json")
    assert code == 0, out + err
    assert (tmp_path / "cards" / "card.png.txt").read_text(encoding="utf-8") == "Dear Ada, see you Sunday"
    assert "<smolvlm:OCRText>Dear Ada, see you Sunday</smolvlm:OCRText>" in (
        tmp_path / "cards" / "card.png.xmp").read_text(encoding="utf-8")
    assert (tmp_path / "cards" / "card.png.postcard").read_text(encoding="utf-8") == "text: Dear Ada, see you Sunday"
    sys.modules.pop("handwriting_plugin", None)


ECHO = '''
from dataclasses import dataclass

from smolvlm_watch import hookimpl
from smolvlm_watch.config import ModelConfig
from smolvlm_watch.engine import Answer, Backend, Check, ModelInfo
from smolvlm_watch.settings import setting


@dataclass(frozen=True)
class EchoModel(ModelConfig):
    greeting: str = setting("hello")
    n_ctx: int = setting(2048, minimum=1)


class Echo:
    """Answers every request with its greeting and its context size: a backend of its own keys."""

    vision_passes = 0
    loaded = True
    prepares_ahead = False

    def __init__(self, model, runtime):
        self.model = model

    def load(self): pass
    def info(self): return ModelInfo(id=self.model.source, revision=None, dtype=None, device="echo", backend="echo")
    def generate(self, requests): return [Answer(text=f"{self.model.greeting} {self.model.n_ctx}") for _ in requests]
    def max_batch(self): return 4
    def video_sampling(self): return {"fps": 1, "max_frames": 4, "edge": None}
    def image_edge(self, settings): return None
    def preprocess(self, requests): pass
    def cancel(self): pass
    def probe(self): return None


@hookimpl
def register_backends(register):
    register(Backend("echo", Echo, "answers with its greeting", model=EchoModel,
                     doctor=lambda config: [Check("ok", f"engine: echo says {config.model.greeting!r}")]))
'''


def test_hook_a_third_party_backend_declares_its_own_keys(tmp_path, run_cli, write_config, monkeypatch):
    """Issue 32, 2: SECTIONS["model"] refused any key a third-party engine needed; a backend now
    declares its keys on its own ModelConfig subclass: checked with the core's wording, unknown
    ones refused with its list, and handed to its engine typed."""
    (tmp_path / "echo_plugin.py").write_text(ECHO)
    monkeypatch.syspath_prepend(str(tmp_path))
    head = "plugins: [echo_plugin]\nmodel: {backend: echo, %s}\n"
    code, _, err = run_cli("config", "check", write_config(head % "n_ctx: 0, greting: hi"))
    assert code == 2
    assert "model.n_ctx: 0 is too small (minimum 1)" in err
    assert ("model.greting: unknown key (known: id, path, revision, longest_edge, max_image_size, image_splitting, "
            "preload, backend, greeting, n_ctx)") in err
    code, _, err = run_cli("config", "check", write_config(head % "dtype: float32"))  # the transformers backend's
    assert code == 2 and "model.dtype: unknown key" in err
    cfg = write_config(head % "greeting: ahoy, n_ctx: 512" + f"watches: [{tmp_path / 'in'}]\n"
                       "tasks: {caption: {prompt: Say}}\n")
    code, out, err = run_cli("config", "check", cfg)
    assert code == 0, err
    assert "greeting: ahoy" in out and "n_ctx: 512" in out
    img = make_image(tmp_path / "in" / "a.png")
    code, out, err = run_cli("process", img, "-c", cfg, "--task", "caption", "--json")
    assert code == 0, out + err
    assert read_sidecar(img)["tasks"]["caption"]["result"] == "ahoy 512"
    code, out, _ = run_cli("doctor", "-c", cfg)
    assert "engine: echo says 'ahoy'" in out
    sys.modules.pop("echo_plugin", None)
