"""`vidcore bench` on tiny variants of the real backends (CPU): results, the reference comparison, and
one-line refusals before any weight is made."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vidcore import cli, plugins

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny(monkeypatch):
    """The tiny backends of bench/gpu/tiny.py under the official names, and no installed plugin."""
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "-")
    monkeypatch.syspath_prepend(str(ROOT / "bench" / "gpu"))
    sys.modules.pop("tiny", None)
    import tiny as tiny_backends

    plugins.reset(extra_plugins=[("bench-tiny", tiny_backends.Plugin())])
    yield
    monkeypatch.undo()
    plugins.reset()


def run(capsys, *argv):
    code = cli.main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_presets_and_diffusers_on_the_same_weights(tiny, capsys, tmp_path):
    pytest.importorskip("diffusers")
    path = tmp_path / "r.json"
    code, out, err = run(capsys, "wan2.2-t2v-a14b", "--device", "cpu", "--memory", "resident", "stream", "fp8",
                         "--vs", "diffusers", "--json", str(path))
    assert code == 0, err
    assert "[1/3] resident" in out and "[3/3] fp8" in out and "MFU" in out and "diffusers:" in out
    res = json.loads(path.read_text())
    rows = {r["preset"]: r for r in res["presets"]}
    assert rows["stream"]["rel_diff_vs_first"] == 0.0  # streaming moves weights, never changes them
    assert 0 < rows["fp8"]["rel_diff_vs_first"] < 0.1
    assert all(r["forward_s"] > 0 and r["step_s"] > 0 for r in rows.values())
    assert res["diffusers"]["rel_diff"] < 1e-5 and res["diffusers"]["ours_speedup"] > 0
    code, out, err = run(capsys, "wan2.2-t2v-a14b", "--device", "cpu", "--json", str(path))
    assert code == 2 and "already exists" in err and err.count("\n") == 1 and "resident" not in out


@pytest.mark.parametrize("argv,needle", [
    (["wan2.2-t2v-a14b", "--device", "cpu", "--memory", "nope"], "unknown memory preset 'nope'"),
    (["wan2.2-t2v-a14b", "--device", "cpu", "--expert", "middle"], "no expert 'middle'"),
    (["wan2.2-t2v-a14b", "--device", "cpu", "--size", "10x10"], "size 10x10 is not supported"),
    (["wan2.2-t2v-a14b", "--device", "cpu", "--repeat", "0"], "--repeat must be between 1 and 100"),
    (["wan2.2-t2v-a14b", "--device", "tpu"], "unknown device"),
    (["no-such-model", "--device", "cpu"], "no-such-model"),
])
def test_bad_input_is_one_line_before_any_weight(tiny, capsys, monkeypatch, argv, needle):
    from vidcore.bench import denoiser

    monkeypatch.setattr(denoiser, "materialise", lambda *a, **k: pytest.fail("weights were made"))
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_backend_without_bench_conditions_says_so(capsys):
    code, out, err = run(capsys, "latte-shapes", "--device", "cpu")
    assert code == 2 and "bench_conditions" in err and err.count("\n") == 1


def test_without_a_gpu_it_asks_for_device_cpu(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run(capsys, "latte-shapes")
    assert code == 2 and "--device cpu" in err and err.count("\n") == 1
