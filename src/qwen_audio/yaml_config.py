"""Frozen dataclass configs from YAML: unknown keys and wrong types are errors, with their path.

A typo in a recipe (``lerning_rate``) must stop the run before hours of compute, not be ignored.
pydantic validates: the configs stay plain frozen stdlib dataclasses (no pydantic import where
they are defined), and a one-field wrapper model carries ``extra="forbid"``, which pydantic hands
down to the stdlib dataclasses nested in it (``TypeAdapter(cls, config=…)`` refuses a config for
a dataclass). Its lax mode also reads ``learning_rate: 1e-4``, which YAML 1.1 leaves a string.
``__post_init__`` checks still run, and their ``ConfigError`` comes back with the key's path.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from qwen_audio.errors import ConfigError

T = TypeVar("T")


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    """Read ``path`` and build ``cls`` (a dataclass) from it."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML ({error})") from None
    return from_dict(cls, data, where=str(file))


def from_dict(cls: type[T], data: Any, *, where: str = "config") -> T:
    """Build ``cls`` from plain data; every problem is listed, each named by its key path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    try:
        return _wrapper(cls).model_validate({"value": data}).value
    except pydantic.ValidationError as error:
        raise ConfigError("\n".join(_messages(cls, error, where))) from None


def to_dict(config: Any) -> dict[str, Any]:
    """The inverse, for saving the exact config beside a checkpoint (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.cache
def _wrapper(cls: type) -> type[pydantic.BaseModel]:
    return pydantic.create_model(f"{cls.__name__}File", __config__=pydantic.ConfigDict(extra="forbid"), value=(cls, ...))


def _messages(cls: type, error: pydantic.ValidationError, where: str) -> list[str]:
    unknown: dict[tuple, list[str]] = {}
    out: list[str] = []
    for problem in error.errors():
        loc = problem["loc"][1:]  # past the wrapper's "value"
        if problem["type"] == "unexpected_keyword_argument":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif problem["type"] == "value_error":  # a ConfigError from __post_init__
            out.append(f"{_path(where, loc)}: {problem['ctx']['error']}")
        elif problem["type"] == "missing":
            out.append(f"{_path(where, loc)}: required")
        else:
            out.append(f"{_path(where, loc)}: {problem['msg']}, got {problem['input']!r}")
    for loc, keys in unknown.items():
        owner = _dataclass_at(cls, loc)
        known = f" for {owner.__name__}; known: {sorted(f.name for f in dataclasses.fields(owner))}" if owner else ""
        out.insert(0, f"{_path(where, loc)}: unknown key(s) {sorted(keys)}{known}")
    return out


def _path(where: str, loc: tuple) -> str:
    return where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _dataclass_at(cls: type, loc: tuple) -> type | None:
    """The dataclass whose keys sit at ``loc`` (to list the known keys), if the hints tell it."""
    hint: Any = cls
    for part in loc:
        hint = _without_none(hint)
        if isinstance(part, int) and typing.get_origin(hint) in (tuple, list):
            hint = typing.get_args(hint)[0]
        elif isinstance(part, str) and dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint).get(part)
        else:
            return None
    hint = _without_none(hint)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint
