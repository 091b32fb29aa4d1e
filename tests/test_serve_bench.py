"""bench/serve_load.py runs end to end (2 clients, 1 job each) and reports against its store baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("vidcore_latte")

ROOT = Path(__file__).resolve().parent.parent


def test_the_load_benchmark_reports_latencies_throughput_memory_and_its_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("serve_load", None)
    import serve_load

    out = tmp_path / "load.json"
    assert serve_load.main(["--clients", "2", "--jobs", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    served, base = data["served"], data["baseline"]
    assert served["errors"] == [] and served["jobs_per_s"] > 0
    assert served["create"]["n"] == 2 and served["content"]["n"] == 2 and served["retrieve"]["n"] >= 2
    assert served["create"]["p95_ms"] >= served["create"]["p50_ms"] > 0
    assert base["add"]["n"] == 2 and base["adds_per_s"] > 0
    assert served["server_peak_rss_mib"] > 50
    text = capsys.readouterr().out
    assert "create / store.add" in text and "server peak RSS" in text
