"""Checkpoint tensor names -> module names: the layout's shared-file prefixes, then the backend's key map."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import CheckpointError
from .layout import CheckpointLayout, KeyMap, same_names


def rename_keys(names: Iterable[str], rules: Iterable[tuple[str, str]] = (),
                drop: Iterable[str] = ()) -> dict[str, str | None]:
    """A key map from regex rules, for ``Backend.key_map`` implementations.

    Each ``(pattern, replacement)`` is applied in order with ``re.sub``; names
    matching a ``drop`` regex map to ``None`` (skipped). E.g. strip a DDP
    wrapper: ``rename_keys(names, [(r"^module\\.", "")])``.
    """
    rules = [(re.compile(p), r) for p, r in rules]
    drops = [re.compile(p) for p in drop]
    out: dict[str, str | None] = {}
    for name in names:
        if any(d.search(name) for d in drops):
            out[name] = None
            continue
        new = name
        for pat, rep in rules:
            new = pat.sub(rep, new)
        out[name] = new
    return out


def map_names(layout: CheckpointLayout, component: str, names: list[str], key_map: KeyMap = same_names, *,
              name: str) -> dict[str, str]:
    """``{checkpoint name: module name}`` for ``component``, without the names skipped on purpose.

    Where the layout gives the component a prefix (files shared with other
    components), only names with it are the component's, and ``key_map`` sees
    them without it. Two checkpoint names mapped to one module name raise
    (``name``, the backend's, is for the message).
    """
    prefix = layout.prefixes.get(component, "")
    own = {n[len(prefix):]: n for n in names if n.startswith(prefix)} if prefix else {n: n for n in names}
    raw = key_map(component, list(own))
    mapping = {own[k]: v for k, v in raw.items() if v is not None and k in own}
    seen: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in seen:
            raise CheckpointError(f"{name} {component}: checkpoint tensors {seen[dst]!r} and {src!r} "
                                  f"both map to {dst!r}; the backend's key_map is wrong for these files")
        seen[dst] = src
    return mapping
