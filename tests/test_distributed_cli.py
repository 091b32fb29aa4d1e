"""``torchrun --nproc-per-node 4 -m vidcore generate ... --ulysses 2 --cfg-parallel`` writes the same video
as one process, once (rank 0); a split the processes cannot run ends in one line before any weights load.

Uses the tiny DiT backend of test_distributed_core (registered by a small runner
script, as test_batch does). Skipped until ``vidcore generate`` has the options.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
RUNNER = """
import sys
sys.path.insert(0, {tests!r})
import test_distributed_core
from vidcore import plugins
plugins.reset(extra_plugins=[("dit-toy", test_distributed_core)])
from vidcore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _has_parallel_options() -> bool:
    from vidcore.cli import build_parser

    return "--ulysses" in build_parser()._subparsers._group_actions[0].choices["generate"].format_help()


pytestmark = pytest.mark.skipif(not _has_parallel_options(),
                                reason="vidcore generate has no --ulysses/--ring/--cfg-parallel yet")


def _torchrun(n: int, script: Path, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIDCORE_LOAD_PLUGINS="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_torchrun_generate_matches_one_process(tmp_path, monkeypatch, capsys):
    import test_distributed_core

    from vidcore import plugins
    from vidcore.cli import main
    from vidcore.video import read_video

    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    common = ["generate", "a cat", "--backend", "dit-toy", "--device", "cpu", "--seed", "3", "--quiet"]
    monkeypatch.setenv("VIDCORE_LOAD_PLUGINS", "")
    plugins.reset(extra_plugins=[("dit-toy", test_distributed_core)])
    try:
        assert main([*common, "--out", str(tmp_path / "one.mp4")]) == 0
        # a split this process cannot run: one line, exit 2, nothing written
        assert main([*common, "--out", str(tmp_path / "bad.mp4"), "--ulysses", "2"]) == 2
        assert "error: --ulysses 2 --ring 1 needs 2 processes" in capsys.readouterr().err
        assert not (tmp_path / "bad.mp4").exists()
    finally:
        plugins.reset()
    proc = _torchrun(4, script, [*common, "--out", str(tmp_path / "four.mp4"), "--ulysses", "2", "--cfg-parallel"],
                     tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("four.mp4") == 1  # only rank 0 writes and reports
    one, _ = read_video(tmp_path / "one.mp4")
    four, _ = read_video(tmp_path / "four.mp4")
    assert one.shape == four.shape and (one.int() - four.int()).abs().max() <= 1
