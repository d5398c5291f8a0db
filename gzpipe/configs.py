"""Typed configs from plain data (a JSON file, a YAML section): unknown keys are named beside the valid ones,
and values of the wrong type are refused with the key's name, before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from gzpipe.errors import GzpipeError


def _allowed_types(annotation) -> tuple[set, bool]:
    """({int, float, str, bool, list, dict}, accepts None) of a field annotation such as ``int | None``."""
    hint = annotation
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds, optional = set(), False
    for a in args:
        if a is type(None):
            optional = True
        else:
            origin = typing.get_origin(a) or a
            kinds.add(origin)
    return kinds, optional


def _type_name(kinds: set) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def check_value(where: str, value: Any, annotation) -> Any:
    """``value`` converted to the field's type where that is lossless (an int where a float is wanted); otherwise a
    one-line error naming ``where``."""
    kinds, optional = _allowed_types(annotation)
    if value is None:
        if optional:
            return None
        raise GzpipeError(f"{where} must be {_type_name(kinds)}, not empty")
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int) and (int in kinds or float in kinds):
        return value if int in kinds else float(value)
    elif isinstance(value, float) and float in kinds:
        return value
    elif any(k in kinds for k in (str, list, dict)) and isinstance(value, tuple(k for k in kinds
                                                                                  if k in (str, list, dict))):
        return value
    elif any(k is typing.Any or k not in (int, float, str, bool, list, dict) for k in kinds):
        return value  # a type this checker does not know: the dataclass's own validation decides
    raise GzpipeError(f"{where} must be {_type_name(kinds)}, got {value!r}")


def unknown_keys_error(where: str, unknown: list[str], valid: list[str]) -> GzpipeError:
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, valid, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return GzpipeError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                       f"valid keys: {', '.join(valid)}")


def from_mapping(cls, data: dict, where: str, exclude: tuple[str, ...] = (), **fixed) -> Any:
    """``cls(**fixed, **data)`` with every key of ``data`` known to ``cls`` (and not in ``exclude``) and of the
    right type; errors name ``where`` (e.g. "study.yaml train")."""
    if not isinstance(data, dict):
        raise GzpipeError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude and f.name not in fixed]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise unknown_keys_error(where, unknown, valid)
    values = {k: check_value(f"{where}.{k}", v, hints[k]) for k, v in data.items()}
    return cls(**fixed, **values)


def check_keys(data: dict, where: str, cls, exclude: tuple[str, ...] = (), sep: str = ".") -> dict:
    """Check ``data``'s keys and types against ``cls``'s fields without building it; returns the converted dict.
    Errors name ``where``, ``sep`` and the key (``boost.rounds``; ``--param seed`` with ``sep=" "``)."""
    if not isinstance(data, dict):
        raise GzpipeError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise unknown_keys_error(where, unknown, valid)
    return {k: check_value(f"{where}{sep}{k}", v, hints[k]) for k, v in data.items()}
