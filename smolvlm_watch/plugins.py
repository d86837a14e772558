"""Finding and loading plugins; the registry of tasks and writers they provide.

Built-ins are registered by module name, third-party plugins through the ``smolvlm_watch``
entry-point group, extra modules by dotted name from the config. A plugin that fails to import
or to register fails the start with its name in the error, never mid-run.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar
from collections.abc import Iterable

import pluggy

from . import hookspecs
from .config import Config, ConfigError, ModelConfig, Names, names
from .settings import Reader, keys
from .engine import Backend, Engine
from .sidecar import Writer
from .tasks import Task

T = TypeVar("T")

DEFAULT_PLUGINS = (
    "smolvlm_watch_plugins.backends",
    "smolvlm_watch_plugins.caption",
    "smolvlm_watch_plugins.ocr",
    "smolvlm_watch_plugins.tags",
    "smolvlm_watch_plugins.ask",
    "smolvlm_watch_plugins.writers",
)

# Tests set this so plugins installed in the environment never leak into a test run.
LOAD_ENTRYPOINTS_ENV = "SMOLVLM_WATCH_LOAD_ENTRYPOINTS"


class PluginError(Exception):
    """A plugin could not be loaded or registered; the message names it."""


@dataclass(frozen=True)
class Provided(Generic[T]):
    """A task or writer with the plugin that registered it."""

    name: str
    plugin: str
    version: str
    obj: T


class Registry:
    """The plugin manager plus the tasks, writers and backends its plugins registered."""

    def __init__(self, extra_modules: Iterable[str] = (), entrypoints: bool | None = None):
        self.pm = pluggy.PluginManager("smolvlm_watch")
        self.pm.add_hookspecs(hookspecs)
        self.tasks: dict[str, Provided[Task]] = {}
        self.writers: dict[str, Provided[Writer]] = {}
        self.backends: dict[str, Provided[Backend]] = {}
        for name in DEFAULT_PLUGINS:
            self._register_module(name)
        if entrypoints is None:
            entrypoints = os.environ.get(LOAD_ENTRYPOINTS_ENV, "1") != "0"
        if entrypoints:
            self._load_entrypoints()
        for name in extra_modules:
            self._register_module(name)
        self._collect()

    @property
    def task_objects(self) -> dict[str, Task]:
        """Each registered task by name (what reads a sidecar's entries back: search)."""
        return {name: provided.obj for name, provided in self.tasks.items()}

    def _register_module(self, name: str) -> None:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a plugin may fail to import in any way: the start stops, naming it
            raise PluginError(f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}") from exc
        if self.pm.get_plugin(name) is None:
            self.pm.register(module, name)

    def _load_entrypoints(self) -> None:
        for ep in metadata.entry_points(group="smolvlm_watch"):
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # likewise for an entry point
                raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc
            self.pm.register(plugin, ep.name)

    def register(self, plugin: object, name: str) -> None:
        """Register one more plugin object (tests and embedding applications use this)."""
        self.pm.register(plugin, name)
        self._collect()

    def _collect(self) -> None:
        self.tasks, self.writers, self.backends = {}, {}, {}
        hooks: tuple[tuple[Any, str, dict[str, Provided[Any]]], ...] = (
            (self.pm.hook.register_tasks, "task", self.tasks), (self.pm.hook.register_writers, "writer", self.writers),
            (self.pm.hook.register_backends, "backend", self.backends))
        for hook, kind, table in hooks:
            for impl in hook.get_hookimpls():
                plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
                register = lambda obj, _t=table, _k=kind, _p=plugin_name: self._add(_t, _k, _p, obj)  # noqa: E731
                try:
                    impl.function(*([register] if impl.argnames else []))
                except PluginError:
                    raise
                except Exception as exc:  # and for a register hook
                    raise PluginError(f"plugin {plugin_name!r} failed to register its {kind}s: "
                                      f"{type(exc).__name__}: {exc}") from exc

    def _add(self, table: dict[str, Provided[Any]], kind: str, plugin: str, obj: Any) -> None:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} without a name: {obj!r}")
        if name in table:
            raise PluginError(f"{kind} {name!r} is registered twice: by {table[name].plugin!r} and by {plugin!r}")
        version = str(getattr(obj, "version", None) or _distribution_version(plugin))
        table[name] = Provided(name=name, plugin=plugin, version=version, obj=obj)


    def backend(self, config: Config) -> Backend:
        """The backend ``model.backend`` names."""
        return self.backends[config.model.backend].obj

    def engine(self, config: Config) -> Engine:
        """The engine ``model.backend`` names, built (not loaded) from the config."""
        return self.backend(config).create(self.model(config)[0], config.runtime)

    def model(self, config: Config) -> tuple[ModelConfig, list[str]]:
        """``config.model`` as its backend declares it (``Backend.model``): the keys waiting in
        ``options`` read into that class, with what is wrong with them (``Backend.check``)."""
        backend = self.backend(config)
        if isinstance(config.model, backend.model) and not config.model.options:
            return config.model, backend.check(config.model)
        r = Reader(config.source.parent if config.source else Path.cwd())  # unknown keys: ``unknown``
        core = {f.name: getattr(config.model, f.name) for f in fields(ModelConfig) if f.name != "options"}
        model = backend.model(**{**r.values(backend.model, config.model.options, "model"), **core})
        return model, r.problems + backend.check(model)

    def model_keys(self, backend: str, options: Iterable[str]) -> list[str]:
        """The keys under ``model:`` that neither the core nor ``backend`` declares."""
        if backend not in self.backends:
            return []  # reported as an unknown backend
        known = keys(self.backends[backend].obj.model)
        return [f"model.{key}: unknown key (known: {', '.join(known)})" for key in options if key not in known]

    def check(self, config: Config) -> Config:
        """What only the loaded plugins can tell about a config: every task, writer and backend
        it names exists, every task's options fit its schema, the backend's keys fit its
        declaration and it has what it needs. Returns the config with ``model`` as the backend
        declares it; raises one ConfigError listing every problem with its key path."""
        problems = self.unknown(names(config))
        for name, task_config in config.tasks.items():
            if name in self.tasks:
                problems += self.tasks[name].obj.check_options(task_config.options, f"tasks.{name}",
                                                               task_config.direct)
        for i, watch in enumerate(config.watches):
            for j, name in enumerate(watch.tasks):
                if name in self.tasks:
                    task = self.tasks[name].obj
                    problems += [f"watches[{i}].tasks[{j}] ({name}): {why}"
                                 for why in task.check_spec(task.spec(config.task_config(name, watch)))]
            for name, override in watch.task_overrides.items():
                if name in self.tasks:
                    where = f"watches[{i}].tasks[{watch.tasks.index(name)}].{name}"
                    problems += self.tasks[name].obj.check_options(override.options, where, override.direct)
        if config.model.backend in self.backends:
            model, wrong = self.model(config)
            problems += wrong
            config = replace(config, model=model)
        if problems:
            raise ConfigError(problems, str(config.source) if config.source else None)
        return config

    def unknown(self, names: Names) -> list[str]:
        """Each name a config uses that no loaded plugin provides, and each ``model:`` key its
        backend does not declare, with its key path."""
        tables: dict[str, dict[str, Any]] = {"backend": self.backends, "task": self.tasks, "output": self.writers}
        return [f"{where}: unknown {kind} {name!r} (known: {', '.join(sorted(tables[kind]))})"
                for where, kind, name in names.used if name not in tables[kind]
                ] + self.model_keys(names.backend, names.model_keys)


def _distribution_version(plugin: str) -> str:
    top = plugin.split(".")[0]
    if top in ("smolvlm_watch", "smolvlm_watch_plugins"):
        from . import __version__

        return __version__
    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        return "0"
