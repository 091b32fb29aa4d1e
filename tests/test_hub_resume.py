"""Downloads resume across processes: `vidcore download` killed mid-file (SIGKILL), then run again.

A real child process (tests/hub_child.py, which runs the CLI) downloads from the
fake hub, which stalls part-way through a 12 MiB file (huggingface_hub writes in
10 MiB chunks, so 10 MiB are on disk by then). The test kills the child, runs a
second one, and checks from the fake hub's request log that the second GET
carried ``Range: bytes=N-`` with N > 0 and that the file's bytes were served
about once (not twice), that the file arrived intact, and that no partial file
or other debris is left: the folder then holds exactly what an uninterrupted
download leaves (huggingface_hub's own lock and metadata files included).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidcore import hub
from vidcore.errors import CheckpointError

try:
    from fakehub import TinyBackend, hub_env, reference_weights, write_checkpoint
except ImportError:  # tests/ imported as a package
    from tests.fakehub import TinyBackend, hub_env, reference_weights, write_checkpoint

REPO = "org/tiny"
BIG = "tokenizer/big.bin"
MIB = 1024 * 1024
CHILD = Path(__file__).with_name("hub_child.py")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    backend = TinyBackend()
    src = write_checkpoint(backend, tmp_path / "src", reference_weights(backend))
    with hub_env(monkeypatch, tmp_path) as h:
        h.add_repo(REPO, src, files={BIG: random.Random(0).randbytes(12 * MIB)})
        yield h


def _child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.incomplete") if p.is_file()]


def _tree(root: Path) -> set[str]:
    """Every file under ``root`` with hashes and commits written as placeholders (same shape, any run)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _kill_mid_file(h, args: list[str], watch: Path) -> int:
    """Run a child until it has written part of the big file, SIGKILL it, and return the partial size."""
    h.stall[BIG] = 11 * MIB
    child = _child(args)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sizes = [p.stat().st_size for p in _partials(watch)] if watch.exists() else []
            if h.stalled.is_set() and sizes and max(sizes) >= 10 * MIB:
                break
            if child.poll() is not None:
                pytest.fail(f"the child ended before it was killed: {child.communicate()}")
            time.sleep(0.02)
        else:
            pytest.fail("the child never wrote part of the file")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        h.stall.clear()
        h.release.set()
    return max(p.stat().st_size for p in _partials(watch))


def _second_run_resumes(h, args: list[str], watch: Path) -> None:
    size = len(h.files(REPO)[BIG].read_bytes())
    partial = _kill_mid_file(h, args, watch)
    assert partial == 10 * MIB
    first = len(h.gets(BIG))
    child = _child(args)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    later = h.gets(BIG)[first:]
    assert len(later) == 1 and later[0]["range"] == f"bytes={partial}-"  # resumed, from where it stopped
    assert later[0]["sent"] == size - partial
    assert h.sent(BIG) < size + 2 * MIB  # the file crossed the wire about once: 11 MiB, then the last 2
    folder = Path(out.strip().splitlines()[-1])
    assert hashlib.sha256((folder / BIG).read_bytes()).digest() == hashlib.sha256(h.files(REPO)[BIG].read_bytes()
                                                                                   ).digest()
    assert not _partials(watch)


def _clean_tree(h, tmp_path: Path, args: list[str], watch: str) -> set[str]:
    """What an uninterrupted download into a fresh place leaves (to compare the resumed one with)."""
    child = _child([a.replace(str(tmp_path), str(tmp_path / "clean")) for a in args])
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return _tree(tmp_path / "clean" / watch)


def test_a_killed_download_into_a_folder_resumes_in_the_next_process(fake, tmp_path):
    args = ["--dir", str(tmp_path / "ckpt")]
    _second_run_resumes(fake, args, tmp_path / "ckpt")
    assert _tree(tmp_path / "ckpt") == _clean_tree(fake, tmp_path, args, "ckpt")


def test_a_killed_download_into_the_cache_resumes_in_the_next_process(fake, tmp_path, monkeypatch):
    _second_run_resumes(fake, [], tmp_path / "hf-cache")
    resumed = _tree(tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "clean" / "hf-cache"))
    assert resumed == _clean_tree(fake, tmp_path, [], "hf-cache")


# -- the target folder itself -----------------------------------------------------------------
def test_a_dir_that_is_a_file_is_one_line(fake, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(CheckpointError) as err:
        hub.download(TinyBackend(), tmp_path / "taken")
    assert "\n" not in str(err.value) and str(tmp_path / "taken") in str(err.value)
