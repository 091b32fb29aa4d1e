"""`vidcore serve` refuses in one line (exit 2) before it binds a port or loads a weight."""

from __future__ import annotations

import socket

import pytest

from vidcore.cli import main
from vidcore.serve.config import is_loopback


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("VIDCORE_API_KEY", raising=False)


def refused(capsys, *args: str) -> str:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_a_reachable_host_needs_an_api_key(capsys, tmp_path, host):
    err = refused(capsys, "--host", host, "--out", str(tmp_path / "o"))
    assert f"--host {host} is reachable from other machines; set an API key" in err
    assert not (tmp_path / "o").exists()  # nothing was made


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True),
                                        ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
                                        ("localhost.example.com", False)])
def test_loopback_is_told_apart(host, loop):
    assert is_loopback(host) is loop


def test_the_key_may_come_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCORE_API_KEY", "k")
    err = refused(capsys, "--host", "192.0.2.1", "--out", str(tmp_path / "o"))  # TEST-NET: not this machine's
    assert "cannot listen on 192.0.2.1" in err or "is not an address of this machine" in err
    from vidcore.serve.sqlite import SQLiteStore

    SQLiteStore(tmp_path / "o" / "jobs.sqlite3").close()  # the refused server let go of its store


@pytest.mark.parametrize("args, message", [
    (["--store", "postgresql://user:secret@127.0.0.1:1/jobs"],
     "cannot use job store 'postgresql://user:***@127.0.0.1:1/jobs' ("),
    (["--store", "redis://x"], "is not a store URL vidcore knows"),
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--memory", "nope"], "unknown memory preset 'nope'"),
    (["--ckpt", "latte-shapes"], "--ckpt 'latte-shapes' is not NAME=DIR"),
    (["--ckpt", "other=/tmp"], "--ckpt names backend 'other', which is not served"),
    (["--port", "70000"], "--port 70000 is not a TCP port"),
    (["--max-queue", "0"], "--max-queue must be at least 1"),
    (["--api-key", " "], "the API key is empty or has spaces around it"),
    (["--port", "x"], "argument --port: invalid int value: 'x'"),
])
def test_bad_flags_are_one_line(capsys, tmp_path, args, message):
    pytest.importorskip("vidcore_latte")
    err = refused(capsys, "--out", str(tmp_path / "o"), *args)
    assert message in err and "secret" not in err


def test_a_port_in_use_is_one_line(capsys, tmp_path):
    pytest.importorskip("vidcore_latte")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        err = refused(capsys, "--port", str(port), "--out", str(tmp_path / "o"))
    assert f"port {port} on 127.0.0.1 is in use; stop what holds it or choose another --port" in err


def test_without_the_extra_it_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    err = refused(capsys, "--out", str(tmp_path / "o"))
    assert "vidcore serve needs fastapi; install the extra: pip install 'vidcore[serve]'" in err


def test_help_lists_the_flags(capsys):
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--backend", "--memory", "--store", "--api-key", "--out", "--max-queue"):
        assert flag in text
