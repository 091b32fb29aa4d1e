"""`vidcore download` in a process of its own, for tests/test_hub_resume.py (which kills it mid-file).

Usage: ``python tests/hub_child.py [vidcore download arguments after the backend name]``. The
environment points huggingface_hub at the fake hub (see `fakehub.hub_env`); the tiny backend is
registered programmatically, as a plugin would register it, with a layout that also fetches
``tokenizer/*.bin`` (the big file the test interrupts).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakehub import TinyBackend, single_layout  # noqa: E402

from vidcore import cli, plugins  # noqa: E402
from vidcore.backend import CheckpointLayout  # noqa: E402
from vidcore.hookspecs import hookimpl  # noqa: E402

LAYOUT = CheckpointLayout(repo_id="org/tiny", files=single_layout().files, extra=("config.json", "tokenizer/*.bin"))


class TinyPlugin:
    @staticmethod
    @hookimpl
    def register_backends(register):
        register(TinyBackend(LAYOUT))


if __name__ == "__main__":
    plugins.reset(extra_plugins=[("tiny", TinyPlugin)])
    sys.exit(cli.main(["download", "tiny-test", *sys.argv[1:]]))
