"""Command-line flags derived from config dataclasses, so an option's default and meaning live in one place.

A config dataclass documents each field in its docstring as ``name: meaning`` (continuation lines indented;
``a, b: meaning`` documents several; a leading ``- `` and RST backquotes are allowed). :func:`add_fields`
turns every field into a ``--name-with-dashes`` flag whose default is the field's default (or an override
given by the caller, e.g. a stage default of the main job) and whose help is that text; :func:`build` makes
the dataclass back from the parsed options.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     '''Demo settings.
...
...     size: items per batch.
...     fast: skip the slow check.
...     '''
...     size: int = 4
...     fast: bool = False
>>> p = argparse.ArgumentParser()
>>> add_fields(p, Demo)
>>> build(Demo, p.parse_args(["--size", "8"]))
Demo(size=8, fast=False)
>>> field_help(Demo)["fast"]
'skip the slow check.'
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any

_DOC_LINE = re.compile(r"^\s*(?:- )?((?:``)?\w+(?:``)?(?:\s*,\s*(?:``)?\w+(?:``)?)*)\s*:\s+(.*)$")


def field_help(cls: type) -> dict[str, str]:
    """Each field's meaning, read from the ``name: meaning`` lines of the class docstring."""
    names = {f.name for f in fields(cls)}
    out: dict[str, str] = {}
    current: list[str] = []
    for line in (cls.__doc__ or "").splitlines():
        m = _DOC_LINE.match(line)
        keys = [k.strip().strip("`") for k in m.group(1).split(",")] if m else []
        if m and keys and all(k in names for k in keys):
            current = keys
            for k in keys:
                out[k] = m.group(2).strip()
        elif current and line.strip() and line.startswith((" " * 6, "\t")):  # a continuation line
            for k in current:
                out[k] += " " + line.strip()
        else:
            current = []
    return out


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _scalar(annotation: Any) -> tuple[type | None, bool]:
    """(element type, is a list) of a field annotation such as ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (args[0] if args else str), True
    return (annotation if isinstance(annotation, type) else str), False


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
    helps: Mapping[str, str] | None = None,
    prefix: str = "",
) -> None:
    """Add one flag per field of dataclass ``cls`` (``dest`` = ``prefix + field name``).

    only / skip: which fields. defaults: field -> default for this command (else the field's own).
    names: field -> flag name (e.g. ``{"batched": "--no-batch"}``; a True-by-default bool's flag turns it
    off). choices: field -> allowed values. helps: field -> help for this command (else the docstring's).
    """
    hints = typing.get_type_hints(cls)
    docs = field_help(cls)
    wanted = set(only) if only is not None else None
    for f in fields(cls):
        if f.name in set(skip) or (wanted is not None and f.name not in wanted):
            continue
        default = (defaults or {}).get(f.name, _default(f))
        typ, many = _scalar(hints[f.name])
        text = (helps or {}).get(f.name, docs.get(f.name, f.name))
        # argparse %-formats help; RST backquotes read badly in a terminal
        kw: dict[str, Any] = {"dest": prefix + f.name, "help": text.replace("%", "%%").replace("``", "")}
        name = (names or {}).get(f.name, flag(f.name))
        if typ is bool and not many:
            kw["action"] = "store_false" if default else "store_true"
            kw["default"] = bool(default)
            if default:  # the flag turns the field off: say which field, not a confusing "default: True"
                kw["help"] += f" [{f.name} = %(default)s unless given]"
        else:
            kw["type"] = typ
            kw["default"] = list(default) if many and default is not None else default
            if many:
                kw["nargs"] = "+"
            if choices and f.name in choices:
                kw["choices"] = list(choices[f.name])
        parser.add_argument(name, **kw)


def build(cls: type, ns: argparse.Namespace, *, prefix: str = "", **given: Any) -> Any:
    """The ``cls`` instance of the parsed flags that :func:`add_fields` added (fields it did not add keep their
    defaults; ``given`` sets fields directly)."""
    kw = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        dest = prefix + f.name
        if f.name in given:
            kw[f.name] = given[f.name]
        elif hasattr(ns, dest):
            v = getattr(ns, dest)
            _, many = _scalar(hints[f.name])
            if many and v is not None and typing.get_origin(hints[f.name]) is tuple:
                v = tuple(v)
            kw[f.name] = v
    return cls(**kw)
