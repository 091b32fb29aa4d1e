"""Where a backend's weights live (`CheckpointLayout`) and how their tensor names become module names (`KeyMap`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: ``key_map(component, checkpoint names) -> {checkpoint name: module name}``; a name left out (or
#: mapped to None) is skipped on purpose. `Backend.key_map` is one.
KeyMap = Callable[[str, list[str]], Mapping[str, "str | None"]]


def same_names(component: str, names: list[str]) -> dict[str, str]:
    """The identity key map: checkpoint names are module names."""
    return {n: n for n in names}


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a backend's weights live: the hub repository and each component's files.

    ``files`` maps a component to glob patterns relative to the checkpoint
    folder (sharded safetensors indexes allowed); ``extra`` lists other files
    the backend needs (tokenizers, configs). ``allow_patterns`` is exactly what
    `vidcore download` fetches.

    ``prefixes`` is for components that share files: component -> the prefix
    its tensors carry there (e.g. ``{"denoiser": "denoiser."}`` when one
    ``model.safetensors`` holds every component). The prefix is stripped before
    the key map sees the names, and tensors without it belong to other components.
    """

    repo_id: str | None
    files: Mapping[str, tuple[str, ...]]
    extra: tuple[str, ...] = ()
    revision: str | None = None
    prefixes: Mapping[str, str] = field(default_factory=dict)

    @property
    def allow_patterns(self) -> list[str]:
        pats = [p for patterns in self.files.values() for p in patterns] + list(self.extra)
        return list(dict.fromkeys(pats))
