"""Shared helpers of the Wan2.2 plugin tests: reference manifests and tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"


def manifest(name: str) -> dict:
    return json.loads((DATA / name).read_text())


