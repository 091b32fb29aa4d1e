"""DDP through torchrun on CPU (gloo, two processes) equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
import yaml
from safetensors.torch import load_file
from vidcore_latte.train.trainer import Trainer

from conftest import tiny_train


def _write_config(tmp_path, out):
    cfg = asdict(tiny_train(tmp_path, out=str(out), steps=2, save_every=2))
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg))))
    return path


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    Trainer(tiny_train(tmp_path, out=str(one), steps=2, save_every=2), resume=False).run()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vidcore_latte.train", "--config", str(_write_config(tmp_path, two))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    a = load_file(str(one / "checkpoints" / "step-0000002" / "model.safetensors"))
    b = load_file(str(two / "checkpoints" / "step-0000002" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
