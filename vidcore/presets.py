"""Generation presets: named recipes of settings for some backends, e.g. a step-distilled LoRA's 4 steps, no CFG.

A plugin registers them through the ``register_generation_presets`` hook
(``register(name, GenerationPreset(...))``), in the one registry every other
kind uses, so `--preset` and its validation read the same table. A preset only
sets *defaults*: every setting a user gives explicitly wins over it, and the
run record stores the resolved settings (plus the preset's name), so a replay
never depends on the preset table. A preset names the LoRA files it is meant
for in its help text; it never downloads anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError

#: the `vidcore.request.resolve` settings a preset may set
SETTINGS = ("size", "frames", "fps", "steps", "sampler", "schedule", "shift", "guidance", "negative",
            "sampler_options", "schedule_options", "guidance_options", "cache")
KIND = "generation preset"


@dataclass(frozen=True)
class GenerationPreset:
    """Settings per backend name (``settings[backend] = {"steps": 4, ...}``) and where they come from.

    ``source`` cites the release the numbers follow (a URL and what it states); ``loras``
    names the files the recipe expects (shown in help; never downloaded).
    """

    description: str
    settings: Mapping[str, Mapping[str, Any]]
    source: str
    loras: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("a generation preset must cite its source")
        for backend, values in self.settings.items():
            bad = sorted(set(values) - set(SETTINGS))
            if bad:
                raise ValueError(f"preset settings for {backend!r} name unknown settings {bad}; allowed: "
                                 f"{', '.join(SETTINGS)}")

    def describe(self) -> str:
        text = self.description + (f" (LoRAs: {self.loras})" if self.loras else "")
        return f"{text}; source: {self.source}"


def presets_for(backend_name: str) -> dict[str, GenerationPreset]:
    """The registered presets that have settings for ``backend_name``, by name."""
    from .plugins import registry

    return {name: entry.obj for name, entry in sorted(registry().entries[KIND].items())
            if backend_name in entry.obj.settings}


def get_preset(backend_name: str, name: str) -> GenerationPreset:
    """The preset ``name`` for a backend, or one line listing the ones it has."""
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"preset must be a name; got {name!r}")
    known = presets_for(backend_name)
    if name not in known:
        choices = ", ".join(known) if known else "none are registered for it"
        raise InvalidRequestError(f"unknown preset {name!r} for backend {backend_name!r}; known: {choices}")
    return known[name]


def with_preset(backend: Any, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (resolve's keyword settings, None = not given) with preset ``name``'s values filling the gaps.

    Options belong to their owner, as resolve treats the backend's own: the preset's sampler
    options apply only if the sampler is the preset's, its schedule options and shift only if
    the schedule is the preset's; guidance options merge key by key. Explicit values always win.
    """
    values = get_preset(backend.name, name).settings[backend.name]
    out = dict(given)
    for key, value in values.items():
        if key in ("sampler_options", "schedule_options", "guidance_options", "shift"):
            continue
        if out.get(key) is None:
            out[key] = value
    d = backend.defaults
    if (out.get("sampler") or d.sampler) == values.get("sampler", d.sampler) and "sampler_options" in values:
        out["sampler_options"] = {**values["sampler_options"], **(given.get("sampler_options") or {})}
    if (out.get("schedule") or d.schedule) == values.get("schedule", d.schedule):
        if "schedule_options" in values:
            out["schedule_options"] = {**values["schedule_options"], **(given.get("schedule_options") or {})}
        if "shift" in values and given.get("shift") is None:
            out["shift"] = values["shift"]
    if "guidance_options" in values:
        out["guidance_options"] = {**values["guidance_options"], **(given.get("guidance_options") or {})}
    return out
