"""The GPU acceptance run's CPU dry run (``--tiny``): every stage runs, every key the issue names is there,
and on tiny fp32 models our denoisers agree with diffusers' on the same weights (the GPU run's comparison)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu/acceptance.py"), "--tiny", "--out", str(out),
                           "--stages", "sweep,kernels,attention,noise,wan,presets,hunyuan,e2e,numerics"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (res_file,) = out.glob("tiny-*.json")
    res = json.loads(res_file.read_text())
    assert res["stage_errors"] == {}
    for key in ("device", "date", "torch", "wan_a14b_forward", "hunyuan_forward", "kernels", "attention",
                "memory_presets", "end_to_end", "noise_sha256"):
        assert key in res, key
    assert len(res["kernel_sweep"]) > 5
    for row in res["kernels"] + res["kernel_sweep"]:
        assert "error" not in row and row.get("rel_err_float32", row.get("rel_err")) < 1e-5, row
    for key in ("wan_a14b_forward", "hunyuan_forward"):
        (row,) = res[key]
        assert {"size", "vidcore_s", "diffusers_s", "peak_gib", "rel_diff"} <= set(row)
        assert row["rel_diff"] < 1e-5, row  # same weights, same inputs, fp32: the two implementations agree
    presets = {r["preset"]: r for r in res["memory_presets"]}
    assert set(presets) == {"resident", "stream", "low-vram", "fp8", "offload"}
    for name in ("stream", "low-vram", "offload"):
        assert presets[name]["rel_diff_vs_resident"] == 0.0, presets[name]  # moving weights changes nothing
    assert 0 < presets["fp8"]["rel_diff_vs_resident"] < 0.1
    stages = [s["stage"] for s in res["end_to_end"]["stages"]]
    assert stages[-1] == "mp4 encode" and (out / "e2e-ti2v-5b.mp4").stat().st_size > 0
    for row in res["numerics"]:  # tiny models in fp32 on the CPU: the "bf16" runs are fp32 too
        assert "error" not in row and row["vidcore_vs_diffusers"] < 1e-5, row
    assert (out / res_file.name.replace(".json", ".md")).read_text().startswith("## GPU acceptance run")
