"""`manifest` (vidcore inspect) and `verify` (vidcore verify): meta build, headers only, every problem kind."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from vidcore.errors import CheckpointError
from vidcore.manifest import manifest, verify

try:
    from fakehub import TinyBackend, reference_weights, sharded_layout, single_layout, write_checkpoint
except ImportError:  # tests/ imported as a package
    from tests.fakehub import TinyBackend, reference_weights, sharded_layout, single_layout, write_checkpoint


def _good(tmp_path, layout=single_layout):
    b = TinyBackend(layout())
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights, shards=2)
    return b, weights


def test_manifest_lists_every_state_tensor_at_full_size():
    b = TinyBackend(dim=24)
    data = manifest(b)
    cpu = b.build("cpu")
    assert list(data) == ["denoiser", "vae"]
    for comp, module in cpu.items():
        sd = module.state_dict()
        assert list(data[comp]) == list(sd)
        for name, t in sd.items():
            assert data[comp][name] == {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    assert data["denoiser"]["blocks.1.fc.weight"]["shape"] == [24, 24]
    assert data["denoiser"]["step_count"] == {"shape": [], "dtype": "int64"}
    assert "rope.freqs" not in data["denoiser"]  # non-persistent: not part of any checkpoint
    json.dumps(data)


@pytest.mark.parametrize("layout", [single_layout, sharded_layout])
def test_verify_good_checkpoint(tmp_path, layout):
    b, _ = _good(tmp_path, layout)
    report = verify(b, tmp_path)
    assert report.ok, report.lines()
    report.raise_if_bad()
    assert report.lines()[-1] == "OK"
    data = report.to_json()
    assert data["ok"] and data["components"]["denoiser"]["tensors"] == len(manifest(b)["denoiser"])
    assert len(data["components"]["denoiser"]["files"]) == (2 if layout is sharded_layout else 1)
    json.dumps(data)


def test_verify_reads_headers_only(tmp_path):
    """Garbage in every tensor's bytes is invisible to verify: it never reads tensor data."""
    b, _ = _good(tmp_path)
    path = tmp_path / "denoiser.safetensors"
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    raw[8 + n:] = os.urandom(len(raw) - 8 - n)
    path.write_bytes(bytes(raw))
    assert verify(b, tmp_path).ok


def test_verify_reports_each_problem_kind(tmp_path):
    b, weights = _good(tmp_path)
    den = dict(weights["denoiser"])
    del den["blocks.0.fc.bias"]  # missing
    den["extra.weight"] = torch.zeros(2)  # unexpected
    den["head.weight"] = torch.zeros(4, 9)  # mis-shaped
    save_file(den, str(tmp_path / "denoiser.safetensors"))
    (tmp_path / "vae.pth").unlink()  # missing file
    report = verify(b, tmp_path)
    assert not report.ok
    assert report.missing_files == {"vae": ["vae.pth"]}
    assert report.missing == {"denoiser": ["blocks.0.fc.bias"]}
    assert report.unexpected == {"denoiser": ["extra.weight"]}
    assert report.mis_shaped == {"denoiser": [("head.weight", (4, 9), (4, 8))]}
    text = "\n".join(report.lines())
    for needle in ("missing file      vae.pth", "missing tensor    blocks.0.fc.bias", "unexpected tensor extra.weight",
                   "mis-shaped tensor head.weight: checkpoint [4, 9] vs model [4, 8]", "FAILED"):
        assert needle in text
    data = report.to_json()
    assert data["components"]["denoiser"]["mis_shaped"] == [{"name": "head.weight", "checkpoint": [4, 9],
                                                            "model": [4, 8]}]
    assert data["components"]["vae"]["compared"] is False
    with pytest.raises(CheckpointError) as err:
        report.raise_if_bad()
    msg = str(err.value)
    assert "\n" not in msg
    assert "vae lacks file(s) vae.pth" in msg and "1 missing" in msg and "1 unexpected" in msg
    assert "1 mis-shaped" in msg and f"vidcore download tiny-test --dir {tmp_path}" in msg


def test_verify_missing_shard_and_folder(tmp_path):
    b, _ = _good(tmp_path, sharded_layout)
    (tmp_path / "denoiser" / "diffusion_pytorch_model-00001-of-00002.safetensors").unlink()
    report = verify(b, tmp_path)
    assert report.missing_files == {"denoiser": ["denoiser/diffusion_pytorch_model-00001-of-00002.safetensors"]}
    missing_dir = verify(b, tmp_path / "nowhere")
    assert not missing_dir.ok and "does not exist" in missing_dir.problems[0]
    with pytest.raises(CheckpointError, match="does not exist"):
        missing_dir.raise_if_bad()


def test_verify_reports_corrupt_and_unsafe_files(tmp_path):
    b, weights = _good(tmp_path)
    (tmp_path / "denoiser.safetensors").write_bytes(b"\xff" * 12)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({**weights["vae"], "x": Evil()}, tmp_path / "vae.pth")
    report = verify(b, tmp_path)
    assert not report.ok and not (tmp_path / "pwned").exists()
    assert "corrupt safetensors header" in report.unreadable["denoiser"][0]
    assert "needs code to unpickle" in report.unreadable["vae"][0]
    with pytest.raises(CheckpointError) as err:
        report.raise_if_bad()
    assert "\n" not in str(err.value) and "denoiser.safetensors" in str(err.value)


def test_verify_applies_the_key_map(tmp_path):
    rules = {"vae": [(r"^module\.", "")]}
    b = TinyBackend(rules=rules)
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights)
    torch.save({"module": weights["vae"]}, tmp_path / "vae.pth")
    assert verify(b, tmp_path).ok
    plain = verify(TinyBackend(), tmp_path)
    assert len(plain.unexpected["vae"]) == len(weights["vae"]) and len(plain.missing["vae"]) == len(weights["vae"])


def test_verify_notes_missing_extra_files(tmp_path):
    b, _ = _good(tmp_path)
    (tmp_path / "config.json").unlink()
    report = verify(b, tmp_path)
    assert report.ok and any("config.json" in n for n in report.notes)
    assert any("config.json" in line for line in report.lines())


def test_verify_without_layout_is_a_note(tmp_path):
    b = TinyBackend()
    b.layout = None
    report = verify(b, tmp_path)
    assert report.ok and report.notes
