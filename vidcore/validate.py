"""Checks of single user-given values: types, finite numbers, ranges, lengths.

Every setting reaches vidcore from somewhere a user typed it (a CLI flag, a
Python keyword, a batch line, a run record, a server request), and JSON and
Python both let through values that only fail deep inside a run: ``NaN`` and
``Infinity`` parse as floats, ``True`` is an ``int``, ``2.5`` truncates
silently to ``2``. These helpers refuse such values with one line naming the
setting, so `vidcore.request` can apply the same rules to every source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidRequestError


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int (an integral float such as ``4.0`` is accepted; ``True`` and ``2.5`` are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{name} must be a whole number; got {_show(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidRequestError(f"{name} must be a whole number; got {_show(value)}")
    n = int(value)
    _check_range(name, n, lo, hi)
    return n


def number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    """``value`` as a finite float within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{name} must be a number; got {_show(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise InvalidRequestError(f"{name} must be a finite number; got {_show(value)}")
    if lo_open and lo is not None and x <= lo:
        raise InvalidRequestError(f"{name} must be greater than {_fmt(lo)}; got {_fmt(x)}")
    _check_range(name, x, None if lo_open else lo, hi)
    return x


def _fmt(x: float | None) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _check_range(name: str, x: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and not lo <= x <= hi:
        raise InvalidRequestError(f"{name} must be between {_fmt(lo)} and {_fmt(hi)}; got {_fmt(x)}")
    if lo is not None and x < lo:
        raise InvalidRequestError(f"{name} must be at least {_fmt(lo)}; got {_fmt(x)}")
    if hi is not None and x > hi:
        raise InvalidRequestError(f"{name} must be at most {_fmt(hi)}; got {_fmt(x)}")


def text(name: str, value: Any, *, max_chars: int) -> str:
    """A string of at most ``max_chars`` characters, without NUL (which C libraries truncate at)."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string; got {_show(value)}")
    if len(value) > max_chars:
        raise InvalidRequestError(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidRequestError(f"{name} contains a NUL character")
    return value


def optional_text(name: str, value: Any, *, max_chars: int) -> str | None:
    return None if value is None else text(name, value, max_chars=max_chars)


def options(name: str, value: Any) -> dict[str, Any]:
    """A mapping of option names to JSON-like values whose numbers are all finite."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{name} must be a mapping of option names to values; got {_show(value)}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidRequestError(f"{name} has a non-string option name {_show(key)}")
        out[key] = _finite_tree(f"{name}[{key!r}]", item)
    return out


def _finite_tree(name: str, value: Any, depth: int = 0) -> Any:
    if depth > 8:
        raise InvalidRequestError(f"{name} is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number; got {_show(value)}")
    if isinstance(value, Mapping):
        return {k: _finite_tree(f"{name}[{k!r}]", v, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return type(value)(_finite_tree(f"{name}[{i}]", v, depth + 1) for i, v in enumerate(value)) \
            if isinstance(value, (list, tuple)) else value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InvalidRequestError(f"{name} must be a number, string, list or mapping; got {type(value).__name__}")
