"""Wheels build and install into a fresh virtual environment; the example plugin is listed and runs.

Our own packages come only from the freshly built wheels (``--no-index --find-links``); their
third-party dependencies are installed first from the package index as a user would have them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT, ROOT / "plugins" / "vidcore_latte", ROOT / "plugins" / "vidcore_wan22",
            ROOT / "plugins" / "vidcore_hunyuan", ROOT / "examples" / "vidcore_example"]
THIRD_PARTY = ["torch==2.13.0", "einops", "pluggy", "safetensors", "huggingface_hub", "av", "numpy", "tqdm", "pyyaml"]


def sh(*cmd, env=None, timeout=900):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheels_install_in_a_fresh_venv_and_the_example_plugin_runs(tmp_path):
    dist = tmp_path / "dist"
    for pkg in PACKAGES:
        shutil.rmtree(pkg / "build", ignore_errors=True)  # stale staged files would leak into the wheel
        sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, pkg)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["vidcore", "vidcore_example", "vidcore_hunyuan", "vidcore_latte",
                                                 "vidcore_wan22"]
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    sh(py, "-m", "pip", "install", "-q", *THIRD_PARTY)
    sh(py, "-m", "pip", "install", "-q", "--no-index", "--find-links", dist, "vidcore[latte]", "vidcore-example")

    env = {k: v for k, v in os.environ.items() if k not in ("VIDCORE_LOAD_PLUGINS", "PYTHONPATH")}
    out = sh(venv / "bin" / "vidcore", "backends", "--json", env=env)
    data = json.loads(out)
    names = {b["name"]: b for b in data["backends"]}
    assert "example-tiny" in names and names["example-tiny"]["plugin"] == "example"
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["latte"]["ok"] and plugins["latte"]["version"] == "0.1.0"
    assert "wan22" not in plugins  # not installed: only what was asked for

    video = tmp_path / "sunset.mp4"
    sh(venv / "bin" / "vidcore", "generate", "sunset", "--backend", "example-tiny", "--sampler",
       "example_midpoint", "--schedule", "example_cosine", "--memory", "example-lean", "--out", video,
       "--seed", "1", env=env)
    record = json.loads(video.with_suffix(".json").read_text())
    assert video.stat().st_size > 0 and record["request"]["sampler"] == "example_midpoint"
    assert record["request"]["schedule"] == "example_cosine"  # the plugin's schedule and preset, from a wheel
    assert record["versions"]["plugins"]["example"] == "0.1.0"
