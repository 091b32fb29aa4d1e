"""A memory policy built from parts: a placement rule per component, a weight format, and switches.

`PolicySpec` is plain data: which strategy each component gets (by exact
name, by role — ``text_encoder``, ``image_encoder``, ``denoiser``, ``vae`` —
or ``*`` for the rest), the weight dtype, which roles store fp8, and the
guidance/VAE switches. Specs add up (``offload + fp8``), so presets are
small and combinable; adding two specs that set the same thing differently
is an error naming both. `ComposedPolicy` runs a spec.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from ..errors import InvalidRequestError
from .base import MemoryPolicy, component_role
from .fp8 import LayerError, quantize_fp8_
from .strategies import Offload, OnHost, Strategy
from .streaming import Stream
from .transport import Move, Transport

log = logging.getLogger(__name__)

RULES = ("resident", "offload", "cpu", "stream")


@dataclass(frozen=True)
class PolicySpec:
    """What a policy does; ``None`` means "not set here" so that specs combine."""

    name: str = "custom"
    #: component name, role or "*" -> one of RULES
    rules: Mapping[str, str] = field(default_factory=dict)
    dtype: torch.dtype | None = None
    #: roles (or component names) whose nn.Linear weights are stored in fp8
    fp8: tuple[str, ...] = ()
    #: blocks in flight ahead of the running one, for streamed components
    ahead: int | None = None
    batched_guidance: bool | None = None
    vae_tiling: bool | None = None
    vae_chunking: bool | None = None
    pin: bool | None = None

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.rules.items() if v not in RULES}
        if bad:
            raise InvalidRequestError(f"memory rule(s) {bad} unknown; use one of: {', '.join(RULES)}")
        if self.ahead is not None and self.ahead < 1:
            raise InvalidRequestError(f"memory streaming needs ahead >= 1, got {self.ahead}")

    def __add__(self, other: PolicySpec) -> PolicySpec:
        merged: dict = {"name": f"{self.name}+{other.name}"}
        for f in fields(self):
            if f.name == "name":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "rules":
                clash = [k for k in set(a) & set(b) if a[k] != b[k]]
                if clash:
                    raise InvalidRequestError(f"memory presets {self.name!r} and {other.name!r} place "
                                              f"{clash[0]!r} differently; combine only one of them")
                merged["rules"] = {**a, **b}
            elif f.name == "fp8":
                merged["fp8"] = tuple(dict.fromkeys((*a, *b)))
            elif a is not None and b is not None and a != b:
                raise InvalidRequestError(f"memory presets {self.name!r} and {other.name!r} both set "
                                          f"{f.name} ({a} vs {b}); combine only one of them")
            else:
                merged[f.name] = a if a is not None else b
        return PolicySpec(**merged)

    def rule(self, component: str) -> str:
        role = component_role(component)
        return self.rules.get(component) or self.rules.get(role) or self.rules.get("*") or "resident"

    def stores_fp8(self, component: str) -> bool:
        return component in self.fp8 or component_role(component) in self.fp8


class ComposedPolicy(MemoryPolicy):
    """Runs a `PolicySpec`: one `Strategy` per component over one shared `Transport`."""

    def __init__(self, spec: PolicySpec, dtype: torch.dtype | None = None):
        super().__init__(dtype if dtype is not None else spec.dtype)
        self.spec = spec
        self.name = spec.name
        if spec.batched_guidance is not None:
            self.batched_guidance = spec.batched_guidance
        if spec.vae_tiling is not None:
            self.vae_tiling = spec.vae_tiling
        if spec.vae_chunking is not None:
            self.vae_chunking = spec.vae_chunking
        self.strategies: dict[str, Strategy] = {}
        self.transport: Transport | None = None
        #: per component, the weight error of each layer stored in fp8 (see `vidcore.memory.fp8`)
        self.fp8_report: dict[str, list[LayerError]] = {}

    # -- loading ------------------------------------------------------------------------------
    def _strategy(self, component: str) -> Strategy:
        rule = self.spec.rule(component)
        if rule == "offload":
            return Offload()
        if rule == "cpu":
            return OnHost()
        if rule == "stream":
            return Stream(self.spec.ahead or 2)
        return Strategy()

    def load_device(self, component: str, device: torch.device) -> torch.device:
        # fp8 components are quantised from the loaded weights, so they must not fill the device first
        on_host = self._strategy(component).loads_on_host or self.spec.stores_fp8(component)
        return torch.device("cpu") if on_host else device

    def setup(self, components: Mapping[str, nn.Module], device: torch.device) -> None:
        self.teardown()
        self.device = torch.device(device)
        self.components = dict(components)
        self.switch_on(self.components)
        self.transport = Transport(self.device, pin=self.spec.pin if self.spec.pin is not None else True)
        for comp in self.components:
            self._setup_one(comp)

    def _setup_one(self, comp: str) -> None:
        module = self.components[comp]
        if self.spec.stores_fp8(comp):
            work = self.device if self.device.type == "cuda" else None
            rows = quantize_fp8_(module, work_device=work)
            if rows:
                self.fp8_report[comp] = rows
                log.info("%s: %d linear layers stored in fp8, worst relative weight error %.2e", comp,
                         len(rows), max(r.weight_rel for r in rows))
        strategy = self._strategy(comp)
        strategy.setup(comp, module, self.transport)
        self.strategies[comp] = strategy

    # -- running ------------------------------------------------------------------------------
    def input_device(self, component: str) -> torch.device:
        strategy = self.strategies.get(component)
        return strategy.input_device(self.device) if strategy else self.device

    @contextmanager
    def use(self, component: str) -> Iterator[nn.Module]:
        strategy = self.strategies[component]
        strategy.enter()
        try:
            yield self.components[component]
        finally:
            strategy.exit()

    def prefetch(self, component: str) -> None:
        if component in self.strategies:
            self.strategies[component].prefetch()

    @contextmanager
    def edit(self, component: str) -> Iterator[nn.Module]:
        """Real weights bound on their home device; afterwards the component is set up again."""
        self.strategies.pop(component).teardown()
        try:
            yield self.components[component]
        finally:
            self._setup_one(component)

    def teardown(self) -> None:
        for strategy in self.strategies.values():
            strategy.teardown()
        self.strategies = {}

    # -- books --------------------------------------------------------------------------------
    def residency(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for strategy in self.strategies.values():
            out.update(strategy.residency())
        return out

    @property
    def moves(self) -> list[Move]:
        return list(self.transport.moves) if self.transport else []

    def stats(self) -> dict[str, int]:
        return self.transport.stats() if self.transport else {}

    def describe(self) -> dict:
        rules = {c: s.kind for c, s in self.strategies.items()} or dict(self.spec.rules)
        d = super().describe()
        d.update(rules=rules, fp8=list(self.spec.fp8), ahead=self.spec.ahead, vae_chunking=self.vae_chunking)
        return d
