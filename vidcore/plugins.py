"""Plugin discovery and the registry of backends, samplers and attention kernels.

Plugins are found through the entry-point group ``vidcore`` and loaded lazily,
once, on first use. ``VIDCORE_LOAD_PLUGINS`` (comma-separated entry-point
names; empty for none) restricts which are loaded. The core's own samplers
and kernels register through the same hooks as anyone's (`vidcore.builtins`).

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

ENTRY_POINT_GROUP = "vidcore"
CORE = "vidcore"
log = logging.getLogger(__name__)


class DuplicateRegistrationError(VidcoreError):
    """Two plugins registered the same name."""


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

    KINDS = ("backend", "sampler", "attention", "command")

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


_lock = threading.RLock()
_registry: Registry | None = None
_extra_plugins: list[tuple[str, object]] = []


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
                st.error = (
                    f"plugin {name!r} implements unknown hook {hook!r}; "
                    f"known hooks: register_backends, register_samplers, register_attention, register_commands"
                )
                log.warning(st.error)
                pm.unregister(plugin)
                break


def _collect(pm: pluggy.PluginManager, status: dict[str, PluginStatus]) -> Registry:
    reg = Registry()
    reg.plugins = status
    hooks: list[tuple[str, str, Callable[..., Any]]] = [
        ("register_backends", "backend", lambda obj: (obj.name, obj, {})),
        ("register_samplers", "sampler", lambda name, fn, **kw: (name, fn, kw)),
        ("register_attention", "attention", lambda name, fn, **kw: (name, fn, kw)),
        ("register_commands", "command", lambda name, configure, run, **kw: (name, (configure, run), kw)),
    ]
    for hook_name, kind, unpack in hooks:
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
    from . import __version__

    return __version__


def registry() -> Registry:
    """The registry, loading plugins on first call (thread-safe, idempotent)."""
    global _registry
    with _lock:
        if _registry is None:
            pm, status = _make_manager()
            _registry = _collect(pm, status)
        return _registry


def reset(extra_plugins: list[tuple[str, object]] | None = None) -> None:
    """Forget loaded plugins; tests use ``extra_plugins`` to register modules without entry points."""
    global _registry, _extra_plugins
    with _lock:
        _registry = None
        _extra_plugins = list(extra_plugins or [])


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


def get_sampler(name: str) -> Callable[..., Any]:
    return registry().get("sampler", name).obj


def sampler_names() -> list[str]:
    return registry().names("sampler")


def attention_entries() -> dict[str, Entry]:
    return dict(registry().entries["attention"])


def plugin_status() -> list[PluginStatus]:
    return list(registry().plugins.values())


def commands() -> dict[str, Entry]:
    return dict(registry().entries["command"])
