"""Dataclass configs from untrusted mappings (checkpoints, run folders, YAML, command-line overrides).

Every field is checked by name and by its annotated type before the dataclass is built, so a file with a
renamed, misspelled or wrongly typed field fails with a message naming the file and the field, never with a
TypeError deep inside a constructor and never by silently dropping a value.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that does not fit its dataclass; the message names where it came from and the field."""


def dataclass_from_dict(cls: type[T], values: Any, where: str) -> T:
    """`cls(**values)` after checking every key is a field of `cls` and every value fits the field's type."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} fields {unknown} (known: {', '.join(sorted(fields))}); "
                          f"it may have been written by another robolearn version")
    checked = {key: check_value(value, hints[key], f"{where}: {key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # the dataclass's own __post_init__ checks
        raise ConfigError(f"{where}: {err}") from err


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation` wants it (an int where a float is wanted becomes a float), else a ConfigError."""
    if annotation is Any or annotation is object:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return check_value(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_name(annotation)}, got {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be null, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return dataclass_from_dict(annotation, value, where)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where} must have {len(args)} entries, got {len(value)}")
            items = [check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        key_type, item_type = args or (Any, Any)
        return {check_value(k, key_type, f"{where} key"): check_value(v, item_type, f"{where}[{k!r}]")
                for k, v in value.items()}
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if annotation in (str, bool):
        if type(value) is annotation:
            return value
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
    return value  # an annotation this checker does not model (a Protocol, a TypeVar): the constructor checks


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
