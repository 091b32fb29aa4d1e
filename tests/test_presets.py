"""Generation presets: registered like every other kind, defaults that explicit settings override, the
resolved settings and the name in the record, replay without the preset, one-line refusals."""

from __future__ import annotations

import json

import pytest

from vidcore import plugins
from vidcore.cli import main
from vidcore.errors import InvalidRequestError
from vidcore.presets import GenerationPreset, presets_for
from vidcore.request import resolve

FAST = GenerationPreset(
    description="toy distilled", source="tests/test_presets.py (made up for the test)", loras="none",
    settings={"toy": {"steps": 2, "guidance": 1.0, "sampler": "flow_euler", "schedule": "toy_flow",
                      "schedule_options": {}, "shift": 3.0, "cache": "first-block:0.05"}})


@pytest.fixture
def fast(toy_registry):
    plugins.register("generation preset", "fast", FAST, plugin="tests")
    yield FAST


def test_preset_fills_defaults_and_explicit_settings_win(fast):
    toy = plugins.get_backend("toy")
    req = resolve(toy, "x", preset="fast", seed=1)
    assert (req.steps, req.guidance, req.schedule, req.schedule_options, req.preset) == (
        2, 1.0, "toy_flow", {"shift": 3.0}, "fast")
    assert req.cache == {"kind": "first-block", "threshold": 0.05}
    req = resolve(toy, "x", preset="fast", steps=5, guidance=2.5, shift=1.5, cache="none", seed=1)
    assert (req.steps, req.guidance, req.schedule_options, req.cache) == (5, 2.5, {"shift": 1.5}, None)
    # the preset's shift belongs to its schedule: another schedule starts from the backend's rules
    req = resolve(toy, "x", preset="fast", schedule="flow", seed=1)
    assert req.schedule_options == {"shift": 1.0}
    assert presets_for("toy") == {"fast": FAST} and presets_for("toy-moe") == {}


def test_backends_json_lists_presets(fast, capsys):
    assert main(["backends", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {b["name"]: b["presets"] for b in data["backends"]} == {"toy": ["fast"], "toy-moe": []}


def test_unknown_presets_and_bad_presets_are_refused(fast):
    with pytest.raises(InvalidRequestError, match="unknown preset 'slow' for backend 'toy'; known: fast"):
        resolve(plugins.get_backend("toy"), "x", preset="slow")
    with pytest.raises(InvalidRequestError, match="unknown preset 'fast' for backend 'toy-moe'; known: none"):
        resolve(plugins.get_backend("toy-moe"), "x", preset="fast")
    with pytest.raises(ValueError, match="unknown settings"):
        GenerationPreset("x", {"toy": {"stepz": 3}}, source="s")
    with pytest.raises(ValueError, match="cite its source"):
        GenerationPreset("x", {"toy": {}}, source="")
    with pytest.raises(plugins.DuplicateRegistrationError, match="'fast' is already registered by plugin 'tests'"):
        plugins.register("generation preset", "fast", GenerationPreset("y", {}, source="s"), plugin="other")


def test_cli_records_the_resolved_settings_and_replays_them(fast, toy_ckpt, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    base = ["--backend", "toy", "--ckpt", str(toy_ckpt), "--quiet", "--device", "cpu", "--lossless"]
    assert main(["generate", "x", *base, "--preset", "fast", "--steps", "3", "--seed", "4", "--out", str(out)]) == 0
    req = json.loads(out.with_suffix(".json").read_text())["request"]
    assert (req["preset"], req["steps"], req["guidance"], req["schedule"]) == ("fast", 3, 1.0, "toy_flow")
    assert req["cache"] == {"kind": "first-block", "threshold": 0.05}
    plugins.unregister("generation preset", "fast")  # a replay needs no preset table
    again = tmp_path / "b.mp4"
    assert main(["generate", "--from-record", str(out.with_suffix(".json")), "--out", str(again), "--quiet",
                 "--device", "cpu", "--lossless"]) == 0
    from vidcore.video import read_video

    assert json.loads(again.with_suffix(".json").read_text())["request"] == req
    assert (read_video(again)[0] == read_video(out)[0]).all()
    capsys.readouterr()
    assert main(["generate", "--from-record", str(out.with_suffix(".json")), "--preset", "fast", "--out",
                 str(tmp_path / "c.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--preset cannot change a replay" in err
    assert main(["generate", "x", *base, "--preset", "fast", "--out", str(tmp_path / "d.mp4")]) == 2
    assert "unknown preset 'fast' for backend 'toy'; known: none are registered for it" in capsys.readouterr().err
