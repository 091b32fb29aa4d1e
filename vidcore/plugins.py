"""Plugin discovery and the one registry of every kind: backends, samplers, schedules, memory presets, ...

Plugins are found through the entry-point group ``vidcore`` and loaded lazily,
once, on first use. ``VIDCORE_LOAD_PLUGINS`` (comma-separated entry-point
names; empty for none) restricts which are loaded. The core's own samplers,
schedules, presets and kernels register through the same hooks as anyone's
(`vidcore.builtins`). Code that registers something after plugins loaded
(``@register_sampler`` in a notebook, `register_preset`) goes through
`register` into the same registry, so whatever looks a name up and whatever
validates a request always agree.

We do not call pluggy's ``load_setuptools_entrypoints`` directly: it stops at
the first plugin that fails to import. Instead each entry point is loaded on
its own, the same way, so a broken plugin is reported by name and the others
keep working.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import UnknownNameError, VidcoreError

#: the backend `vidcore generate` / `vidcore serve` use when none is named (the embedded demo)
DEFAULT_BACKEND = "latte-shapes"
DEFAULT_BACKEND_HINT = (
    "the embedded default model comes with the vidcore-latte plugin; install it with "
    "pip install 'vidcore[latte]' (or pip install ./plugins/vidcore_latte from a checkout), or pass --backend NAME"
)

ENTRY_POINT_GROUP = "vidcore"
CORE = "vidcore"
log = logging.getLogger(__name__)


class DuplicateRegistrationError(VidcoreError, ValueError):
    """Two plugins (or a plugin and a later `register` call) registered the same name."""


@dataclass
class PluginStatus:
    """What happened when one plugin was loaded; shown by `vidcore backends` and `vidcore doctor`."""

    name: str
    module: str
    version: str | None = None
    error: str | None = None
    registered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Entry:
    name: str
    obj: Any
    plugin: str
    extra: dict = field(default_factory=dict)


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    KINDS = ("backend", "sampler", "schedule", "memory preset", "generation preset", "attention", "command")

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in self.KINDS}
        self.plugins: dict[str, PluginStatus] = {}
        self.errors: list[str] = []

    def add(self, kind: str, name: str, obj: Any, plugin: str, **extra: Any) -> None:
        table = self.entries[kind]
        if name in table:
            other = table[name].plugin
            raise DuplicateRegistrationError(
                f"{kind} {name!r} is registered by both plugin {other!r} and plugin {plugin!r}; "
                f"uninstall one of them or set VIDCORE_LOAD_PLUGINS to choose"
            )
        table[name] = Entry(name, obj, plugin, extra)

    def get(self, kind: str, name: str) -> Entry:
        table = self.entries[kind]
        if name not in table:
            raise UnknownNameError(kind, name, list(table))
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def _named(name: str, obj: Any, **kw: Any) -> tuple[str, Any, dict]:
    return name, obj, kw


#: each hook, the kind it fills and how its ``register(...)`` arguments become (name, object, extra)
HOOKS: dict[str, tuple[str, Callable[..., tuple[str, Any, dict]]]] = {
    "register_backends": ("backend", lambda obj: (obj.name, obj, {})),
    "register_samplers": ("sampler", _named),
    "register_schedules": ("schedule", _named),
    "register_memory_presets": ("memory preset", _named),
    "register_generation_presets": ("generation preset", _named),
    "register_attention": ("attention", _named),
    "register_commands": ("command", lambda name, configure, run, **kw: (name, (configure, run), kw)),
}


_lock = threading.RLock()
_registry: Registry | None = None
_loading = False
_extra_plugins: list[tuple[str, object]] = []
_pending: list[tuple[str, str, Any, str, dict]] = []  # `register` calls made while plugins were importing


def _allowlist() -> set[str] | None:
    raw = os.environ.get("VIDCORE_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _make_manager() -> tuple[pluggy.PluginManager, dict[str, PluginStatus]]:
    from . import builtins

    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    status: dict[str, PluginStatus] = {}
    pm.register(builtins, name=CORE)
    status[CORE] = PluginStatus(CORE, builtins.__name__, _core_version())

    allow = _allowlist()
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen or ep.name == CORE or (allow is not None and ep.name not in allow):
            continue
        seen.add(ep.name)
        version = ep.dist.version if ep.dist is not None else None
        st = PluginStatus(ep.name, ep.value, version)
        status[ep.name] = st
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            st.error = f"error importing plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}"
            log.warning(st.error)
    for name, module in _extra_plugins:
        status[name] = PluginStatus(name, getattr(module, "__name__", repr(module)))
        pm.register(module, name=name)
    _check_hook_names(pm, status)
    return pm, status


def _check_hook_names(pm: pluggy.PluginManager, status: dict[str, PluginStatus]) -> None:
    """Catch misspelled hooks (pytest's check_pending), naming the plugin instead of failing all."""
    for name, plugin in list(pm.list_name_plugin()):
        for attr in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr)
            hook = (opts or {}).get("specname") or attr
            if opts is not None and not hasattr(hookspecs, hook):
                st = status.setdefault(name, PluginStatus(name, repr(plugin)))
                st.error = f"plugin {name!r} implements unknown hook {hook!r}; known hooks: {', '.join(HOOKS)}"
                log.warning(st.error)
                pm.unregister(plugin)
                break


def _collect(pm: pluggy.PluginManager, status: dict[str, PluginStatus]) -> Registry:
    reg = Registry()
    reg.plugins = status
    for hook_name, (kind, unpack) in HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            st = status.setdefault(plugin, PluginStatus(plugin, repr(impl.plugin)))
            if st.error:
                continue

            def register(*args: Any, _plugin: str = plugin, _kind: str = kind, _unpack=unpack, **kw: Any):
                name, obj, extra = _unpack(*args, **kw)
                reg.add(_kind, name, obj, _plugin, **extra)
                status[_plugin].registered.append(f"{_kind}:{name}")

            try:
                impl.function(register=register)
            except DuplicateRegistrationError as exc:
                reg.errors.append(str(exc))
                st.error = str(exc)
                log.warning(st.error)
            except Exception as exc:
                st.error = f"plugin {plugin!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                log.warning(st.error)
    # A plugin that failed part-way contributes nothing, so the registry never holds half a plugin.
    for plugin, st in status.items():
        if st.error:
            for table in reg.entries.values():
                for key in [k for k, e in table.items() if e.plugin == plugin]:
                    del table[key]
    return reg


def _core_version() -> str:
    from .version import __version__

    return __version__


def registry() -> Registry:
    """The registry, loading plugins on first call (thread-safe, idempotent)."""
    global _registry, _loading
    with _lock:
        if _registry is None:
            _loading = True
            try:
                pm, status = _make_manager()
                reg = _collect(pm, status)
            finally:
                _loading = False
            for kind, name, obj, plugin, extra in _pending:  # after the hooks: a clash is reported, not fatal
                try:
                    _add(reg, kind, name, obj, plugin, extra)
                except DuplicateRegistrationError as exc:
                    reg.errors.append(str(exc))
                    log.warning(str(exc))
            _pending.clear()
            _registry = reg
        return _registry


def _add(reg: Registry, kind: str, name: str, obj: Any, plugin: str, extra: dict) -> None:
    found = reg.entries[kind].get(name)
    if found is not None and found.obj is obj:
        return  # the same object again (a module imported twice) is no clash
    if found is not None:
        raise DuplicateRegistrationError(f"{kind} {name!r} is already registered by plugin {found.plugin!r}; "
                                         f"{plugin!r} cannot register it again; choose another name")
    reg.add(kind, name, obj, plugin, **extra)
    reg.plugins.setdefault(plugin, PluginStatus(plugin, plugin)).registered.append(f"{kind}:{name}")


def register(kind: str, name: str, obj: Any, *, plugin: str = "runtime", **extra: Any) -> None:
    """Add one entry from code after (or while) plugins load: the same registry, the same clash rule.

    ``@register_sampler``, ``@register_schedule`` and `register_preset` come here,
    so lookup and request validation see the entry at once. A name already
    registered is a `DuplicateRegistrationError` naming both registrants. The
    entry lasts until `reset`.
    """
    if kind not in Registry.KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; one of {', '.join(Registry.KINDS)}")
    with _lock:
        if _registry is None and _loading:  # a plugin registering while it is imported: added after the hooks
            _pending.append((kind, name, obj, plugin, dict(extra)))
            return
        _add(registry(), kind, name, obj, plugin, dict(extra))


def registering(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that passes the function it decorates to `register`, its module named as the registrant."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(kind, name, fn, plugin=getattr(fn, "__module__", None) or "runtime")
        return fn

    return deco


def unregister(kind: str, name: str) -> None:
    """Remove one entry (tests and notebooks undoing a `register`); a name not registered is ignored."""
    with _lock:
        entry = registry().entries[kind].pop(name, None)
        if entry is not None:
            status = registry().plugins.get(entry.plugin)
            if status is not None and f"{kind}:{name}" in status.registered:
                status.registered.remove(f"{kind}:{name}")


def reset(extra_plugins: list[tuple[str, object]] | None = None) -> None:
    """Forget loaded plugins and later registrations; tests use ``extra_plugins`` to add modules without
    entry points."""
    global _registry, _extra_plugins
    with _lock:
        _registry = None
        _extra_plugins = list(extra_plugins or [])
        _pending.clear()


def get_backend(name: str):
    """The registered `vidcore.Backend` called ``name``."""
    reg = registry()
    entry = reg.entries["backend"].get(name)
    if entry is not None:
        return entry.obj
    error = UnknownNameError("backend", name, reg.names("backend"))
    hint = _broken_hint(reg)
    raise VidcoreError(f"{error} ({hint})") if hint else error


def _broken_hint(reg: Registry) -> str:
    broken = [p for p, st in reg.plugins.items() if st.error]
    return f"plugins that failed to load: {', '.join(broken)}; see `vidcore doctor`" if broken else ""


def backends() -> dict[str, Any]:
    return {n: e.obj for n, e in sorted(registry().entries["backend"].items())}


def backend_plugin(name: str) -> str:
    return registry().get("backend", name).plugin


def lookup(kind: str, name: str) -> Any:
    """The object registered as ``name`` of ``kind`` (`UnknownNameError` listing the choices)."""
    return registry().get(kind, name).obj


def names(kind: str) -> list[str]:
    return registry().names(kind)


def get_sampler(name: str) -> Callable[..., Any]:
    return lookup("sampler", name)


def sampler_names() -> list[str]:
    return names("sampler")


def attention_entries() -> dict[str, Entry]:
    return dict(registry().entries["attention"])


def plugin_status() -> list[PluginStatus]:
    return list(registry().plugins.values())


def commands() -> dict[str, Entry]:
    return dict(registry().entries["command"])
