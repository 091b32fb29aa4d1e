"""Downloads through huggingface_hub against a local fake hub (tests/fakehub.py): never the network."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vidcore import hub
from vidcore.backend import CheckpointLayout
from vidcore.checkpoints import load_component
from vidcore.errors import CheckpointError, OfflineError

try:
    from fakehub import TinyBackend, hub_env, reference_weights, single_layout, write_checkpoint
except ImportError:  # tests/ imported as a package
    from tests.fakehub import TinyBackend, hub_env, reference_weights, single_layout, write_checkpoint

REPO = "org/tiny"
WANTED = {"denoiser.safetensors", "vae.pth", "config.json"}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    backend = TinyBackend()
    src = write_checkpoint(backend, tmp_path / "src", reference_weights(backend))
    with hub_env(monkeypatch, tmp_path) as h:
        # files the backend does not need sit beside the ones it does
        h.add_repo(REPO, src, files={"README.md": b"# tiny\n", "denoiser_fp32.safetensors": b"x" * 64,
                                     "extra/denoiser.safetensors": b"y" * 64, "vae.bin": b"z" * 32})
        yield h, backend


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def _same_bytes(h, folder: Path, names) -> bool:
    served = h.files(REPO)
    return all((folder / n).read_bytes() == served[n].read_bytes() for n in names)


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text
    return text


def test_download_to_dir_fetches_exactly_the_layout_files(fake, tmp_path):
    h, backend = fake
    out = hub.download(backend, tmp_path / "ckpt")
    assert out == (tmp_path / "ckpt").resolve()
    assert _files(out) == WANTED
    assert _same_bytes(h, out, WANTED)
    assert {r["file"] for r in h.gets()} == WANTED  # nothing else was even requested
    # and what arrived loads
    mods = backend.build("meta")
    load_component(backend.layout, "denoiser", mods["denoiser"], out, key_map=backend.key_map, name=backend.name,
                   device="cpu", dtype=None)
    ref = reference_weights(backend)["denoiser"]
    assert all((mods["denoiser"].state_dict()[k] == v).all() for k, v in ref.items())


def test_download_to_standard_cache_then_resolve_offline(fake, tmp_path, monkeypatch):
    h, backend = fake
    out = hub.download(backend)
    commit = h.commit(REPO)
    assert out == (tmp_path / "hf-cache" / "models--org--tiny" / "snapshots" / commit).resolve()
    assert _files(out) == WANTED and _same_bytes(h, out, WANTED)
    assert Path(hub.resolve_checkpoint(backend, None)).resolve() == out
    n = len(h.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Path(hub.resolve_checkpoint(backend, None)).resolve() == out
    assert Path(hub.download(backend)).resolve() == out  # complete: offline download is a no-op
    assert len(h.requests) == n  # offline means no request at all


def test_interrupted_transfer_resumes_with_a_range_request(fake, tmp_path, monkeypatch):
    h, _ = fake
    rng = __import__("random").Random(0)
    big = rng.randbytes(12 * 1024 * 1024)  # > huggingface_hub's 10 MiB chunk, so a resume point exists
    h.add_repo(REPO, files={"tokenizer/big.bin": big})
    layout = CheckpointLayout(repo_id=REPO, files=single_layout().files, extra=("config.json", "tokenizer/*.bin"))
    backend = TinyBackend(layout)
    h.drop["tokenizer/big.bin"] = 11 * 1024 * 1024  # the server hangs up once, 11 MiB in
    out = hub.download(backend, tmp_path / "ckpt")
    assert hashlib.sha256((out / "tokenizer/big.bin").read_bytes()).digest() == hashlib.sha256(big).digest()
    gets = h.gets("tokenizer/big.bin")
    assert len(gets) == 2
    assert gets[0]["range"] is None
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 11 * 1024 * 1024  # resumed where it stopped, not restarted


def test_failed_download_reports_missing_and_rerun_fetches_only_those(fake, tmp_path):
    h, backend = fake
    h.fail = {"vae.pth"}
    with pytest.raises(OfflineError) as err:
        hub.download(backend, tmp_path / "ckpt")
    msg = _one_line(err.value)
    assert "vae.pth" in msg and "denoiser.safetensors" not in msg
    assert f"vidcore download tiny-test --dir {tmp_path / 'ckpt'}" in msg
    assert _files(tmp_path / "ckpt") == {"denoiser.safetensors", "config.json"}
    h.fail = set()
    n = len(h.requests)
    out = hub.download(backend, tmp_path / "ckpt")
    assert _files(out) == WANTED and _same_bytes(h, out, WANTED)
    assert [r["file"] for r in h.requests[n:] if r["method"] == "GET" and r.get("file")] == ["vae.pth"]


def test_offline_with_nothing_cached_names_files_and_command(fake, monkeypatch):
    h, backend = fake
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (lambda: hub.resolve_checkpoint(backend, None), lambda: hub.download(backend)):
        with pytest.raises(OfflineError) as err:
            call()
        msg = _one_line(err.value)
        assert all(f in msg for f in WANTED)
        assert "`vidcore download tiny-test`" in msg and "HF_HUB_OFFLINE" in msg
    assert h.requests == []


def test_offline_with_partial_cache_names_exactly_the_missing_file(fake, monkeypatch):
    h, backend = fake
    h.fail = {"denoiser.safetensors"}
    with pytest.raises(OfflineError):
        hub.download(backend)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        hub.resolve_checkpoint(backend, None)
    msg = _one_line(err.value)
    assert "denoiser.safetensors" in msg and "vae.pth" not in msg and "`vidcore download tiny-test`" in msg


def test_unknown_repository_is_one_line(fake):
    _, _ = fake
    with pytest.raises(CheckpointError) as err:
        hub.download(TinyBackend(single_layout("org/nope")))
    assert "org/nope" in _one_line(err.value)


def test_repository_missing_layout_files_is_reported(fake, tmp_path):
    h, _ = fake
    layout = CheckpointLayout(repo_id=REPO, files={"denoiser": ("denoiser.safetensors",), "vae": ("vae_v2.pth",)})
    with pytest.raises(CheckpointError) as err:
        hub.download(TinyBackend(layout), tmp_path / "ckpt")
    assert "vae_v2.pth" in _one_line(err.value)


def test_resolve_explicit_folder(tmp_path):
    backend = TinyBackend()
    with pytest.raises(CheckpointError) as err:
        hub.resolve_checkpoint(backend, tmp_path / "nowhere")
    assert f"vidcore download tiny-test --dir {tmp_path / 'nowhere'}" in _one_line(err.value)
    assert hub.resolve_checkpoint(backend, str(tmp_path)) == tmp_path


def test_backend_without_repository(tmp_path):
    backend = TinyBackend(single_layout(repo_id=None))
    with pytest.raises(CheckpointError, match="no hub repository"):
        hub.download(backend, tmp_path)
    with pytest.raises(CheckpointError, match="--ckpt DIR"):
        hub.resolve_checkpoint(backend, None)


def test_offline_flag_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.offline()
    monkeypatch.setenv("HF_HUB_CACHE", os.fspath(Path("/x/y")))
    assert hub.cache_dir() == Path("/x/y")
