"""How a setting is declared and read: once, on the dataclass field that holds it.

A config section is a frozen dataclass. A field that is a key carries a ``Key`` in its metadata
(``setting(...)``); its type hint says what it accepts (``bool``, ``int``, ``float``, ``str``,
``Path``, a tuple of strings, a ``Literal`` of choices, or another section), and the ``Key`` adds
what the hint cannot: the YAML name, a minimum, a check in words, or a reader of its own for a
real special case (a duration, a file mode, a listen address). ``Reader`` builds a section from
a YAML mapping and collects every problem with its key path instead of stopping at the first,
and ``keys`` lists a section's YAML names: what the parser accepts and what README documents.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
Read = Callable[["Reader", dict, str, str, Any, dict], Any]


@dataclass(frozen=True)
class Key:
    """What a field's type hint cannot say about its key. ``read(reader, data, where, name,
    default, got)`` replaces the generic reading (``got``: the section's keys read so far, in
    field order); ``flat`` puts a sub-section's keys beside this section's own."""

    name: str | None = None
    minimum: float = 0
    expect: str | None = None
    check: Callable[[Any], bool] | None = None
    read: Read | None = None
    flat: bool = False
    shown: Callable[[Any], Any] | None = None  # how ``config check`` prints it (a URL without its password)


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **key: Any) -> Any:
    """A dataclass field that is a config key (``key``: the ``Key``'s fields)."""
    meta = {"key": Key(**key)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _keyed(cls: type) -> list[tuple[dataclasses.Field, Key, Any]]:
    hints = get_type_hints(cls)
    return [(f, f.metadata["key"], hints[f.name]) for f in fields(cls) if "key" in f.metadata]


def _plain(hint: Any) -> Any:
    """``X | None`` as ``X``."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def keys(cls: type) -> tuple[str, ...]:
    """A section's YAML key names, in declaration order (a flat sub-section's keys in its place)."""
    out: list[str] = []
    for f, key, hint in _keyed(cls):
        out += keys(_plain(hint)) if key.flat else [key.name or f.name]
    return tuple(out)


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The values a ``Literal`` field allows."""
    return get_args(_plain(get_type_hints(cls)[name]))


def join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def show(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else type(value).__name__


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


class Reader:
    """Walks a YAML mapping, collecting problems (with key paths) instead of stopping at the first."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: Any, where: str, known: tuple[str, ...] | None) -> dict[str, Any]:
        """A mapping's keys checked against ``known`` (None: any key; a later check knows them)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {show(value)}")
            return {}
        for key in value:
            if known is not None and key not in known:
                self.fail(join(where, str(key)), f"unknown key (known: {', '.join(known)})")
        return value

    def section(self, cls: type[T], raw: Any, where: str, base: T | None = None) -> T:
        """A sub-section ``where`` from its own mapping: unknown keys reported, unset ones from ``base``."""
        data = self.mapping(raw, where, keys(cls))
        return self.build(cls, data, where, base)

    def build(self, cls: type[T], data: dict, where: str, base: T | None = None) -> T:
        got = self.values(cls, data, where, base)
        return dataclasses.replace(base, **got) if base is not None else cls(**got)  # type: ignore[type-var]

    def values(self, cls: type, data: dict, where: str, base: Any = None) -> dict[str, Any]:
        """Each key of ``cls`` read from ``data``; where unset or wrong, its default: ``base``'s
        value (a dataclass, or a dict: absent means None), else the field's own."""
        got: dict[str, Any] = {}
        for f, key, hint in _keyed(cls):
            if isinstance(base, dict):
                default = base.get(f.name)
            elif base is not None:
                default = getattr(base, f.name)
            else:
                default = f.default if f.default is not dataclasses.MISSING else None
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else default
            got[f.name] = self.value(data, where, f.name, key, hint, default, got)
        return got

    def value(self, data: dict, where: str, attr: str, key: Key, hint: Any, default: Any, got: dict) -> Any:
        name = key.name or attr
        if key.read is not None:
            return key.read(self, data, where, name, default, got)
        kind = _plain(hint)
        if key.flat:
            return self.build(kind, data, where, default)
        if dataclasses.is_dataclass(kind):
            return self.section(kind, data.get(name), join(where, name), default)  # type: ignore[arg-type]
        value = data.get(name)
        if value is None:
            return default
        problem = self.problem(value, kind, key)
        if problem is not None:
            self.fail(join(where, name), problem)
            return default
        if kind is Path:
            path = Path(os.path.expandvars(value)).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        return (value,) if get_origin(kind) is tuple and isinstance(value, str) else (
            tuple(value) if get_origin(kind) is tuple else value)

    @staticmethod
    def problem(value: Any, kind: Any, key: Key) -> str | None:
        """Why ``value`` does not fit a key of ``kind``, in the words every config error uses."""
        if get_origin(kind) is Literal:
            allowed = get_args(kind)
            return None if value in allowed else f"{show(value)} is not allowed (allowed: {', '.join(allowed)})"
        expect, ok = {
            bool: ("true or false", isinstance(value, bool)),
            int: ("an integer", isinstance(value, int) and not isinstance(value, bool)),
            float: ("a number", is_number(value)),
            str: ("a string", isinstance(value, str)),
            Path: ("a path", isinstance(value, str) and value != ""),
        }.get(kind, ("a list of strings", isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))))
        if key.check is not None:
            expect, ok = key.expect or expect, key.check(value)
        if not ok:
            return f"expected {expect}, got {show(value)}"
        if kind in (int, float) and value < key.minimum:
            return f"{show(value)} is too small (minimum {key.minimum:g})"
        return None


# Readers of the real special cases (``setting(..., read=...)``), shared by every section.

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(r: Reader, data: dict, where: str, key: str, default: float, got: dict) -> float:
    """Seconds, written as a number or as "7d", "12h", "30m", "45s"."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, str) and len(value) > 1 and value[-1] in _UNITS and value[:-1].strip().isdigit():
        return float(value[:-1]) * _UNITS[value[-1]]
    if is_number(value) and value >= 0:
        return float(value)
    r.fail(join(where, key), f"expected seconds or a duration such as \"7d\", \"12h\", \"30m\", got {show(value)}")
    return default


def file_mode(r: Reader, data: dict, where: str, key: str, default: int, got: dict) -> int:
    """A file mode, written as YAML's octal ``0644`` (read as a number) or as a string "0644"."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("0o").isdigit() and set(value.strip()) <= set("0o1234567"):
        value = int(value.strip().replace("0o", "0"), 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    r.fail(join(where, key), f"expected a file mode such as 0644 or \"0640\", got {show(value)}")
    return default


def on_off_as_words(choices: Any) -> Callable[..., Any]:
    """A choice among words with ``on``/``off``: YAML 1.1 reads those bare as booleans; words here."""
    def read(r: Reader, data: dict, where: str, key: str, default: Any, got: dict) -> Any:
        if isinstance(value := data.get(key), bool):
            data = {**data, key: "on" if value else "off"}
        return r.value(data, where, key, Key(), choices, default, got)
    return read


def auto_bool(r: Reader, data: dict, where: str, key: str, default: Any, got: dict) -> bool | None:
    """``auto``, true or false; ``auto`` is None: the part that uses the key decides."""
    value = r.value(data, where, key, Key(check=lambda v: v == "auto" or isinstance(v, bool),
                                          expect="auto, true or false"), bool, "auto", got)
    return None if value == "auto" else value
