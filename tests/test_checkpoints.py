"""The loading recipe: files, headers, key maps, strict checks, dtype/device materialisation, safety."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vidcore.backend import CheckpointLayout
from vidcore.checkpoints import (
    TensorInfo,
    fingerprint,
    load_component,
    read_header,
    rename_keys,
)
from vidcore.errors import CheckpointError

try:
    from fakehub import TinyBackend, reference_weights, sharded_layout, single_layout, write_checkpoint
except ImportError:  # tests/ imported as a package
    from tests.fakehub import TinyBackend, reference_weights, sharded_layout, single_layout, write_checkpoint


def _load_into(backend, comp, module, folder, dtype=None):
    load_component(backend.layout, comp, module, folder, key_map=backend.key_map, name=backend.name, device="cpu",
                   dtype=dtype)


def _load(backend, folder, dtype=None):
    mods = backend.build("meta")
    for comp, m in mods.items():
        _load_into(backend, comp, m, folder, dtype)
    return mods


def _fingerprint(backend, folder):
    return fingerprint(backend.layout, folder, name=backend.name)


def _assert_weights(mods, weights, dtype=None):
    for comp, sd in weights.items():
        got = mods[comp].state_dict()
        assert set(got) == set(sd)
        for k, v in sd.items():
            want = v.to(dtype) if dtype is not None and v.is_floating_point() else v
            assert got[k].dtype == want.dtype, k
            assert torch.equal(got[k], want), k


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text
    return text


# -- finding files ----------------------------------------------------------------------------
def test_component_files_single_and_sharded(tmp_path):
    b = TinyBackend()
    write_checkpoint(b, tmp_path / "one", reference_weights(b))
    assert b.checkpoint_files(tmp_path / "one", "denoiser") == [tmp_path / "one" / "denoiser.safetensors"]
    assert b.checkpoint_files(tmp_path / "one", "vae") == [tmp_path / "one" / "vae.pth"]

    s = TinyBackend(sharded_layout())
    write_checkpoint(s, tmp_path / "sh", reference_weights(s), shards=3)
    files = s.checkpoint_files(tmp_path / "sh", "denoiser")
    # the index resolves to its shards, once each, even though the shard glob also matches them
    assert [f.name for f in files] == [f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    # a file beside the index that the index does not name (another precision, a leftover) is not ours
    save_file({"head.weight": torch.zeros(1)}, str(tmp_path / "sh" / "denoiser" / "stray.fp16.safetensors"))
    assert s.checkpoint_files(tmp_path / "sh", "denoiser") == files


def test_component_files_missing_are_named_with_the_fix(tmp_path):
    b = TinyBackend()
    write_checkpoint(b, tmp_path, reference_weights(b))
    (tmp_path / "vae.pth").unlink()
    with pytest.raises(CheckpointError) as err:
        b.checkpoint_files(tmp_path, "vae")
    msg = _one_line(err.value)
    assert "vae.pth" in msg and f"vidcore download tiny-test --dir {tmp_path}" in msg and "vidcore verify" in msg

    with pytest.raises(CheckpointError, match="does not exist"):
        b.checkpoint_files(tmp_path / "nope", "vae")

    s = TinyBackend(sharded_layout())
    write_checkpoint(s, tmp_path / "sh", reference_weights(s), shards=2)
    (tmp_path / "sh" / "denoiser" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        s.checkpoint_files(tmp_path / "sh", "denoiser")
    assert "diffusion_pytorch_model-00002-of-00002.safetensors" in _one_line(err.value)
    # a glob that matches nothing at all
    (tmp_path / "sh" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"vae/\*\.safetensors"):
        s.checkpoint_files(tmp_path / "sh", "vae")


INDEX = "denoiser/diffusion_pytorch_model.safetensors.index.json"
SHARD = "diffusion_pytorch_model-00001-of-00002.safetensors"


def _sharded_with_entry(folder: Path, entry) -> tuple[TinyBackend, Path]:
    """A sharded checkpoint whose index names ``entry`` for one tensor (the other shard stays as written)."""
    s = TinyBackend(sharded_layout())
    write_checkpoint(s, folder, reference_weights(s), shards=2)
    index = folder / INDEX
    data = json.loads(index.read_text())
    first = next(k for k, v in data["weight_map"].items() if v == SHARD)
    data["weight_map"][first] = entry
    index.write_text(json.dumps(data))
    return s, index


@pytest.mark.parametrize("entry", ["../../etc/passwd", "/etc/passwd", "../../vae/diffusion_pytorch_model.safetensors",
                                   "", ".", "..", "./", "a\0b.safetensors", 7, None, ["x.safetensors"], {"f": "x"}])
def test_shard_index_entries_must_name_files_inside_the_folder(tmp_path, entry, monkeypatch):
    s, index = _sharded_with_entry(tmp_path / "ckpt", entry)
    opened = []
    monkeypatch.setattr("vidcore.checkpoints.SafetensorsFile.__init__", lambda self, p, *a: opened.append(p))
    with pytest.raises(CheckpointError) as err:
        s.checkpoint_files(tmp_path / "ckpt", "denoiser")
    msg = _one_line(err.value)
    assert str(index) in msg and "download it again" in msg
    assert (json.dumps(entry)[:20] if not isinstance(entry, str) else repr(entry)) in msg
    assert not opened  # refused before any shard is opened


def test_shard_index_entry_inside_the_folder_may_climb_back(tmp_path):
    # "../denoiser/x" from denoiser/ stays inside the checkpoint folder: allowed, and normalised
    s, _ = _sharded_with_entry(tmp_path, f"../denoiser/{SHARD}")
    files = s.checkpoint_files(tmp_path, "denoiser")
    assert tmp_path / "denoiser" / SHARD in files and all(".." not in f.parts for f in files)


def test_shard_index_entry_through_a_symlink_out_of_the_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_file({"x": torch.zeros(1)}, str(outside / SHARD))
    s, index = _sharded_with_entry(tmp_path / "ckpt", f"link/{SHARD}")
    (tmp_path / "ckpt" / "denoiser" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError) as err:
        s.checkpoint_files(tmp_path / "ckpt", "denoiser")
    assert "symlink" in _one_line(err.value) and str(index) in str(err.value)
    # a symlink that stays inside is fine, and so is a shard file that is itself a link (as in the HF cache)
    (tmp_path / "ckpt" / "denoiser" / "link").unlink()
    (tmp_path / "ckpt" / "denoiser" / "link").symlink_to(tmp_path / "ckpt" / "denoiser", target_is_directory=True)
    assert tmp_path / "ckpt" / "denoiser" / "link" / SHARD in s.checkpoint_files(tmp_path / "ckpt", "denoiser")
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    (tmp_path / "ckpt" / "denoiser" / SHARD).rename(blob)
    (tmp_path / "ckpt" / "denoiser" / SHARD).symlink_to(blob)
    (tmp_path / "ckpt" / "denoiser" / "link").unlink()
    index.write_text(index.read_text().replace(f"link/{SHARD}", SHARD))
    assert tmp_path / "ckpt" / "denoiser" / SHARD in s.checkpoint_files(tmp_path / "ckpt", "denoiser")


@pytest.mark.parametrize("entry", ["/etc/passwd", "../../etc/passwd", 7])
def test_verify_reports_a_bad_index_entry_as_a_failed_check(tmp_path, entry, monkeypatch, capsys):
    from vidcore import cli, plugins
    from vidcore.manifest import verify

    s, index = _sharded_with_entry(tmp_path, entry)
    report = verify(s, tmp_path)
    assert not report.ok and str(index) in report.unreadable["denoiser"][0]
    monkeypatch.setattr(plugins, "get_backend", lambda name: s)
    assert cli.main(["verify", "tiny-test", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "FAILED" in out and "Traceback" not in out + err and str(index) in out


@pytest.mark.parametrize("content", ['{"weight_map": ["a"]}', '{"metadata": {}}', "[1]", "{", '{"weight_map": 3}',
                                     "[" * 100_000])
def test_malformed_shard_index_is_one_line(tmp_path, content):
    s, index = _sharded_with_entry(tmp_path, SHARD)
    index.write_text(content)
    with pytest.raises(CheckpointError) as err:
        s.checkpoint_files(tmp_path, "denoiser")
    assert str(index) in _one_line(err.value)


# -- loading ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [single_layout, sharded_layout])
def test_load_matches_reference_weights(tmp_path, layout):
    torch.manual_seed(0)
    b = TinyBackend(layout())
    weights = reference_weights(b, seed=1)
    write_checkpoint(b, tmp_path, weights, shards=3)
    mods = _load(b, tmp_path)
    _assert_weights(mods, weights)
    den = mods["denoiser"]
    # non-persistent buffer re-created by the module's init_non_persistent hook, on the target device
    fresh = TinyBackend(layout()).build("cpu")["denoiser"].rope.freqs
    assert den.rope.freqs.device.type == "cpu" and torch.equal(den.rope.freqs, fresh)
    assert not any(t.is_meta for t in [*den.parameters(), *den.buffers()])
    # and the loaded module computes what the reference module computes
    ref = TinyBackend(layout()).build("cpu")["denoiser"]
    ref.load_state_dict(weights["denoiser"])
    x = torch.randn(2, 4)
    assert torch.equal(den(x), ref(x))


def test_dtype_conversion_on_load(tmp_path):
    b = TinyBackend()
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights)
    mods = _load(b, tmp_path, dtype=torch.bfloat16)
    _assert_weights(mods, weights, dtype=torch.bfloat16)
    assert mods["denoiser"].step_count.dtype == torch.int64  # integer tensors are never converted
    assert all(p.dtype == torch.bfloat16 for p in mods["vae"].parameters())
    # stored bf16, loaded as stored (None) and upcast exactly (float32)
    bf = {c: {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
          for c, sd in weights.items()}
    write_checkpoint(b, tmp_path / "bf16", bf)
    _assert_weights(_load(b, tmp_path / "bf16"), bf)
    up = _load(b, tmp_path / "bf16", dtype=torch.float32)
    _assert_weights(up, {c: {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
                         for c, sd in bf.items()})


def test_parameters_stay_parameters_and_keep_requires_grad(tmp_path):
    b = TinyBackend()
    write_checkpoint(b, tmp_path, reference_weights(b))
    den = _load(b, tmp_path)["denoiser"]
    assert isinstance(den.head.weight, nn.Parameter) and den.head.weight.requires_grad
    assert "step_count" in dict(den.named_buffers())


def test_key_map_renames_and_strips_wrapper_prefixes(tmp_path):
    rules = {"denoiser": [(r"^model\.diffusion_model\.", ""), (r"\.ln\.", ".norm.")],
             "vae": [(r"^module\.", "")]}
    b = TinyBackend(rules=rules)
    weights = reference_weights(b)
    den = {"model.diffusion_model." + k.replace(".norm.", ".ln."): v for k, v in weights["denoiser"].items()}
    save_file(den, str(tmp_path / "denoiser.safetensors"))
    torch.save({"module": weights["vae"]}, tmp_path / "vae.pth")  # an official-style wrapper dict
    _assert_weights(_load(b, tmp_path), weights)
    # without the map the same files are rejected, naming both sides
    with pytest.raises(CheckpointError) as err:
        _load(TinyBackend(), tmp_path)
    msg = _one_line(err.value)
    assert "missing" in msg and "unexpected" in msg and "model.diffusion_model." in msg


def test_key_map_may_drop_names_on_purpose(tmp_path):
    class Dropping(TinyBackend):
        def key_map(self, component, names):
            return rename_keys(names, drop=[r"^decoder_only\."])

    b = Dropping()
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights)
    extra = dict(weights["denoiser"], **{"decoder_only.w": torch.ones(3)})
    save_file(extra, str(tmp_path / "denoiser.safetensors"))
    _assert_weights(_load(b, tmp_path), weights)
    with pytest.raises(CheckpointError, match="1 unexpected"):
        _load(TinyBackend(), tmp_path)


def test_key_map_collisions_are_refused(tmp_path):
    b = TinyBackend(rules={"denoiser": [(r"^blocks\.\d+\.", "blocks.0.")]})
    write_checkpoint(b, tmp_path, reference_weights(b))
    with pytest.raises(CheckpointError, match="both map to"):
        _load(b, tmp_path)


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_strict_mismatch_fails_before_any_tensor_is_loaded(tmp_path, problem):
    b = TinyBackend()
    weights = reference_weights(b)
    sd = dict(weights["denoiser"])
    if problem == "missing":
        del sd["blocks.1.fc.bias"]
        sd.pop("head.weight")
    elif problem == "unexpected":
        sd["blocks.7.fc.weight"] = torch.zeros(8, 8)
    else:
        sd["head.weight"] = torch.zeros(5, 8)
    write_checkpoint(b, tmp_path, weights)
    save_file(sd, str(tmp_path / "denoiser.safetensors"))
    mods = b.build("meta")
    with pytest.raises(CheckpointError) as err:
        _load_into(b, "denoiser", mods["denoiser"], tmp_path, None)
    msg = _one_line(err.value)
    expect = {"missing": ["2 missing", "blocks.1.fc.bias", "head.weight"],
              "unexpected": ["1 unexpected", "blocks.7.fc.weight"],
              "mis-shaped": ["1 mis-shaped", "head.weight: checkpoint [5, 8] vs model [4, 8]"]}[problem]
    assert all(e in msg for e in expect), msg
    assert f"vidcore verify tiny-test {tmp_path}" in msg
    assert all(p.is_meta for p in mods["denoiser"].parameters())  # nothing was materialised


def test_tied_weights_load_once_and_stay_tied(tmp_path):
    class Tied(nn.Module):
        def __init__(self, device=None):
            super().__init__()
            self.embed = nn.Linear(4, 6, bias=False, device=device)
            self.head = nn.Linear(4, 6, bias=False, device=device)
            self.head.weight = self.embed.weight

    class TiedBackend(TinyBackend):
        def build(self, device="meta", dtype=None):
            return {"denoiser": Tied(device)}

    layout = CheckpointLayout(repo_id=None, files={"denoiser": ("tied.safetensors",)})
    b = TiedBackend(layout)
    w = torch.randn(6, 4)
    save_file({"embed.weight": w}, str(tmp_path / "tied.safetensors"))
    m = b.build("meta")["denoiser"]
    _load_into(b, "denoiser", m, tmp_path, torch.float16)
    assert m.head.weight is m.embed.weight and torch.equal(m.embed.weight, w.half())


def test_forgotten_non_persistent_buffer_is_a_clear_error(tmp_path):
    class NoHook(nn.Module):
        def __init__(self, device=None):
            super().__init__()
            self.fc = nn.Linear(2, 2, device=device)
            self.register_buffer("table", torch.zeros(3).to(device), persistent=False)

    class B(TinyBackend):
        def build(self, device="meta", dtype=None):
            return {"denoiser": NoHook(device)}

    b = B(CheckpointLayout(repo_id=None, files={"denoiser": ("d.safetensors",)}))
    save_file({k: v.contiguous() for k, v in NoHook("cpu").state_dict().items()}, str(tmp_path / "d.safetensors"))
    with pytest.raises(RuntimeError, match="init_non_persistent"):
        _load_into(b, "denoiser", b.build("meta")["denoiser"], tmp_path, None)


# -- unsafe and damaged files -----------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [_Payload, _ExecPayload])
def test_pickle_needing_code_is_refused_and_never_runs(tmp_path, payload):
    b = TinyBackend()
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights)
    marker = tmp_path / "pwned"
    torch.save({**weights["vae"], "evil": payload(marker)}, tmp_path / "vae.pth")
    for call in (lambda: read_header(tmp_path / "vae.pth"), lambda: _load(b, tmp_path)):
        with pytest.raises(CheckpointError) as err:
            call()
        msg = _one_line(err.value)
        assert "needs code to unpickle" in msg and "refused for safety" in msg and "vae.pth" in msg
    assert not marker.exists()


def _st_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


@pytest.mark.parametrize("damage", ["truncated-header", "not-json", "offsets", "huge-length", "tiny", "cut-data",
                                    "bad-dtype"])
def test_corrupt_safetensors_header_names_the_file(tmp_path, damage):
    good = _st_bytes({"a": torch.ones(4, 4), "b": torch.zeros(3)})
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    if damage == "truncated-header":
        data = good[: 8 + n // 2]
    elif damage == "not-json":
        data = good[:8] + b"!" + good[9:]
    elif damage == "offsets":
        header["a"]["data_offsets"] = [0, 10_000]
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + good[8 + n:]
    elif damage == "bad-dtype":
        header["a"]["dtype"] = "Q7"
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + good[8 + n:]
    elif damage == "huge-length":
        data = struct.pack("<Q", 2**60) + good[8:]
    elif damage == "tiny":
        data = b"\x01\x02"
    else:
        data = good[:-10]
    path = tmp_path / "denoiser.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        read_header(path)
    msg = _one_line(err.value)
    assert str(path) in msg and "corrupt safetensors header" in msg


def test_damaged_pickle_inside_a_valid_archive_is_refused(tmp_path):
    import zipfile

    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as zin, zipfile.ZipFile(tmp_path / "bad.pth", "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[:10] + b"\x00garbage" if name.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError) as err:
        read_header(tmp_path / "bad.pth")
    assert "bad.pth" in _one_line(err.value) and "refused for safety" in str(err.value)


def test_unreadable_pth_and_unknown_format(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(CheckpointError, match="x.pth"):
        read_header(tmp_path / "x.pth")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown weight format"):
        read_header(tmp_path / "x.onnx")


# -- metadata ---------------------------------------------------------------------------------
def test_read_header_safetensors_and_pth(tmp_path):
    sd = {"w": torch.zeros(3, 5, dtype=torch.bfloat16), "n": torch.arange(4), "s": torch.tensor(2.0)}
    save_file(sd, str(tmp_path / "a.safetensors"))
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "a.pth")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    want = {"w": TensorInfo((3, 5), "bfloat16"), "n": TensorInfo((4,), "int64"), "s": TensorInfo((), "float32")}
    assert read_header(tmp_path / "a.safetensors") == want
    assert read_header(tmp_path / "a.pth") == {f"state_dict.{k}": v for k, v in want.items()}  # flattened
    assert read_header(tmp_path / "legacy.pt") == want


def test_fingerprint_hashes_headers_not_data(tmp_path):
    b = TinyBackend()
    weights = reference_weights(b)
    write_checkpoint(b, tmp_path, weights)
    fp = _fingerprint(b, tmp_path)
    assert set(fp) == {"denoiser.safetensors", "vae.pth", "config.json"}
    raw = (tmp_path / "denoiser.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert fp["denoiser.safetensors"] == {"size": len(raw), "sha256": hashlib.sha256(raw[:8 + n]).hexdigest(),
                                          "hashed": "header"}
    assert fp["vae.pth"]["sha256"] == hashlib.sha256((tmp_path / "vae.pth").read_bytes()).hexdigest()
    # same names and shapes, other values: the header (and so the fingerprint) is the same by design
    write_checkpoint(b, tmp_path / "other", reference_weights(b, seed=5))
    assert _fingerprint(b, tmp_path / "other")["denoiser.safetensors"] == fp["denoiser.safetensors"]
    # a different tensor set changes it
    fewer = {k: v for k, v in weights["denoiser"].items() if k != "head.bias"}
    save_file(fewer, str(tmp_path / "denoiser.safetensors"))
    assert _fingerprint(b, tmp_path)["denoiser.safetensors"]["sha256"] != fp["denoiser.safetensors"]["sha256"]


def test_fingerprint_of_large_pickle_reads_its_ends(tmp_path):
    layout = CheckpointLayout(repo_id=None, files={"vae": ("big.pth",)})
    b = TinyBackend(layout)
    torch.save({"w": torch.zeros(1024, 1024)}, tmp_path / "big.pth")  # 4 MiB
    first = _fingerprint(b, tmp_path)["big.pth"]
    assert first["hashed"] == "first+last MiB" and first["size"] == (tmp_path / "big.pth").stat().st_size
    data = bytearray((tmp_path / "big.pth").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "big.pth").write_bytes(bytes(data))
    assert _fingerprint(b, tmp_path)["big.pth"]["sha256"] != first["sha256"]


def test_shard_index_is_part_of_the_fingerprint(tmp_path):
    s = TinyBackend(sharded_layout())
    write_checkpoint(s, tmp_path, reference_weights(s), shards=2)
    fp = _fingerprint(s, tmp_path)
    assert "denoiser/diffusion_pytorch_model.safetensors.index.json" in fp
    assert fp["denoiser/diffusion_pytorch_model.safetensors.index.json"]["hashed"] == "full"
    assert sum(k.startswith("denoiser/diffusion_pytorch_model-") for k in fp) == 2
