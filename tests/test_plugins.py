"""Plugin discovery: broken plugins are named and isolated, duplicates name both, hooks are checked."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

from vidcore import plugins
from vidcore.errors import UnknownNameError
from vidcore.hookspecs import hookimpl


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, fn in hooks.items():
        setattr(mod, key, fn)
    return mod


class _Named:
    def __init__(self, name):
        self.name = name


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    yield
    plugins.reset()


def test_core_samplers_register_through_the_public_hook(clean):
    plugins.reset()
    reg = plugins.registry()
    assert "flow_euler" in reg.names("sampler")
    assert reg.get("sampler", "flow_euler").plugin == "vidcore"


def test_duplicate_backend_names_both_plugins(clean):
    @hookimpl
    def register_backends(register):
        register(_Named("same"))

    plugins.reset(extra_plugins=[("alpha", _module("alpha", register_backends=register_backends)),
                                 ("beta", _module("beta", register_backends=register_backends))])
    reg = plugins.registry()
    assert len(reg.errors) == 1
    assert "'alpha'" in reg.errors[0] and "'beta'" in reg.errors[0] and "'same'" in reg.errors[0]
    # the first registration survives; the offending plugin contributes nothing
    assert reg.get("backend", "same").plugin == "alpha"
    assert not reg.plugins["beta"].ok


def test_misspelled_hook_is_reported_by_plugin_name(clean):
    @hookimpl
    def register_backend(register):  # missing "s"
        register(_Named("x"))

    plugins.reset(extra_plugins=[("typo", _module("typo", register_backend=register_backend))])
    status = {p.name: p for p in plugins.plugin_status()}
    assert "unknown hook 'register_backend'" in status["typo"].error
    assert plugins.backends() == {}


def test_plugin_raising_in_hook_is_isolated(clean):
    @hookimpl
    def register_backends(register):
        register(_Named("half"))
        raise RuntimeError("boom")

    @hookimpl(specname="register_backends")
    def good(register):
        register(_Named("fine"))

    plugins.reset(extra_plugins=[("bad", _module("bad", register_backends=register_backends)),
                                 ("good", _module("good", good_backends=good))])
    assert "fine" in plugins.backends()
    status = {p.name: p for p in plugins.plugin_status()}
    assert "boom" in status["bad"].error
    assert "half" not in plugins.backends()  # no half-registered plugin


def test_broken_entry_point_is_named_and_others_keep_working(monkeypatch):
    real = importlib.metadata.entry_points

    def fake_entry_points(group=None, **kw):
        if group == plugins.ENTRY_POINT_GROUP:
            return [importlib.metadata.EntryPoint("broken", "no_such_module_for_vidcore_tests", group)]
        return real(group=group, **kw)

    monkeypatch.delenv("VIDCORE_LOAD_PLUGINS", raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    plugins.reset()
    try:
        status = {p.name: p for p in plugins.plugin_status()}
        assert "error importing plugin 'broken'" in status["broken"].error
        assert "no_such_module_for_vidcore_tests" in status["broken"].error
        assert "flow_euler" in plugins.sampler_names()  # the core still works
        with pytest.raises(Exception, match="plugins that failed to load: broken"):
            plugins.get_backend("anything")
    finally:
        plugins.reset()


def test_allowlist_skips_unlisted_entry_points(monkeypatch):
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        assert [p.name for p in plugins.plugin_status()] == ["vidcore"]
    finally:
        plugins.reset()


def test_unknown_backend_lists_choices(toy_registry):
    with pytest.raises(UnknownNameError, match="unknown backend 'nope'; choose one of: toy, toy-moe"):
        plugins.get_backend("nope")
