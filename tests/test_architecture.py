"""The house's rules, read from the code itself: no import circle, decoders that import only the
media base, short functions, a core that names no built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "smolvlm_watch"
BUILTIN_TASKS = {"caption", "ocr", "tags", "ask"}
BUILTIN_BACKENDS = {"openai", "transformers"}
BUILTIN_WRITERS = {"txt"}  # "xmp" is also an XMP namespace prefix and Pillow's key; "json" is plainly core


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The package modules a file imports, anywhere in it (a lazy import is an edge too)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
            if len(submodules) < len(node.names):
                found.add(base)  # a name from the module itself (``from . import __version__``)
            found |= submodules
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere_in_the_package():
    """Issue 32, 6: no exemption any more (cli's subcommands took their helpers from the package
    that imports them; `from . import jsontext` is an edge to jsontext, not to the package)."""
    graph = _graph()
    assert _cycles(graph) == []
    assert len(graph) > 20 and graph["smolvlm_watch.pipeline"]  # the graph is really read


def test_decoders_import_only_the_media_base():
    """A decoder knows the media base and the capture reader (EXIF and container tags: a leaf
    that imports nothing of ours), never another decoder or anything above media."""
    graph = _graph()
    assert {m for m in graph["smolvlm_watch.media.capture"] if m.startswith("smolvlm_watch")} == set()
    for decoder in ("image", "video", "document"):
        ours = {m for m in graph[f"smolvlm_watch.media.{decoder}"] if m.startswith("smolvlm_watch")}
        assert ours <= {"smolvlm_watch.media.base", "smolvlm_watch.media.capture"}, (decoder, ours)


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in [*PACKAGE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 60]
    assert long == []


def test_the_core_names_no_builtin_task():
    """A third-party task gets what a built-in gets: no module of the core has a rule keyed on a
    built-in task's name (the offline test helpers, which run a demo, are not the core)."""
    named = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "testing.py":
            continue
        tree = ast.parse(path.read_text())
        # the one allowed mention: the documented default of watches[].tasks ([caption, tags])
        default = {id(n) for a in ast.walk(tree) if isinstance(a, ast.Assign)
                   and any(getattr(t, "id", "") == "DEFAULT_TASKS" for t in a.targets) for n in ast.walk(a)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in BUILTIN_TASKS and id(node) not in default:
                named.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert named == []


def test_the_core_names_no_builtin_writer_and_writers_ask_by_role():
    """Issue 32, 5: writers take results by role (``record.by_role``), not by a built-in task's
    name, and the core keys no rule on a built-in writer's name (but the documented default
    outputs, [json, txt])."""
    named = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        default = {id(n) for a in ast.walk(tree) if isinstance(a, ast.Assign)
                   and any(getattr(t, "id", "") == "DEFAULT_OUTPUTS" for t in a.targets) for n in ast.walk(a)}
        named += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in BUILTIN_WRITERS and id(node) not in default
                  and path.name != "testing.py"]
    assert named == []
    writers = (ROOT / "plugins" / "writers.py").read_text()
    assert ".result(" not in writers and writers.count(".by_role(") >= 4


def test_the_core_names_no_builtin_backend():
    """Issue 32, 2: a third-party backend gets what a built-in gets: its keys are its own
    (``Backend.model``), and so is what ``doctor`` says of it (``Backend.doctor``). Outside the
    two backends' own modules no rule is keyed on their names, but the documented default of
    ``model.backend`` and transformers the library (``"transformers" in sys.modules``)."""
    own = {"runtime.py", "remote.py", "testing.py"}
    named = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in own:
            continue
        tree = ast.parse(path.read_text())
        allowed = {id(n) for a in ast.walk(tree) for n in ast.walk(a)
                   if (isinstance(a, ast.AnnAssign) and getattr(a.target, "id", "") == "backend")
                   or (isinstance(a, ast.Compare) and "sys.modules" in ast.unparse(a))}
        named += [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in BUILTIN_BACKENDS and id(node) not in allowed]
    assert named == []
    for key in ("base_url", "server", "dtype", "quantize"):  # backend keys the core used to read
        assert not [p for p in PACKAGE.rglob("*.py") if p.name not in own | {"doctor.py"}
                    and f"model.{key}" in p.read_text().replace(f"`model.{key}`", "")], key
