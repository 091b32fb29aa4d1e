"""The one denoising loop shared by every backend.

validate request -> load inputs -> encode conditions -> initial noise ->
schedule -> experts (switching by noise level) -> guidance -> sampler ->
decode -> frames. Backends describe their components; memory policies decide
where weights live; this loop never knows which model family it runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .backend import Backend, Components, Inputs
from .cache import reset_step_caches
from .errors import InvalidRequestError
from .memory import MemoryPolicy, get_policy
from .plugins import backend_plugin, get_backend
from .request import Request, check_fits, check_request, dtype_name, load_inputs, parse_device, parse_dtype, resolve
from .video import Video

log = logging.getLogger(__name__)
StepCallback = Callable[[dict[str, Any]], None]


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


class _ComponentSwitch:
    """Keeps exactly one denoiser component 'in use' under the memory policy as experts switch."""

    def __init__(self, policy: MemoryPolicy, component_of: Mapping[str, str]):
        self.policy, self.component_of = policy, dict(component_of)
        self.current: str | None = None
        self.stack = contextlib.ExitStack()

    def __call__(self, expert_name: str) -> None:
        comp = self.component_of[expert_name]
        if comp == self.current:
            return
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(self.policy.use(comp))
        self.current = comp

    def close(self) -> None:
        self.stack.close()
        self.current = None


class Pipeline:
    """A backend with its components loaded under a memory policy; call it to make a video."""

    def __init__(self, backend: Backend, components: Components, policy: MemoryPolicy, device: torch.device,
                 *, dtype: torch.dtype | None = None, ckpt_dir: Path | None = None,
                 checkpoint: dict[str, Any] | None = None, memory_name: str = "resident"):
        self.backend, self.components, self.policy = backend, components, policy
        self.device, self.dtype, self.ckpt_dir = device, dtype, ckpt_dir
        self.checkpoint = checkpoint
        self.memory_name = memory_name
        #: a vidcore.distributed.Parallel when one video spans several ranks (set by its prepare())
        self.parallel: Any = None
        self.loras: list[dict[str, Any]] = []

    # -- public API -------------------------------------------------------------------------
    def __call__(self, prompt: str = "", *, callback: StepCallback | None = None, progress: bool | None = None,
                 **settings: Any) -> Video:
        """Generate one video; settings are those of `vidcore.request.resolve` (size, frames, steps, ...)."""
        import inspect

        accepted = [p for p in inspect.signature(resolve).parameters if p not in ("backend", "prompt")]
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise InvalidRequestError(f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        req = resolve(self.backend, prompt, **settings)
        return self.run(req, callback=callback, progress=progress)

    def run(self, req: Request, inputs: Inputs | None = None, *, callback: StepCallback | None = None,
            progress: bool | None = None) -> Video:
        from .guidance import Guidance
        from .sampling import Experts, Sampler, Scheduler, wrap_network

        backend, policy = self.backend, self.policy
        check_request(backend, req)  # a hand-built or replayed request meets the rules resolve applies
        if inputs is None:
            inputs = load_inputs(backend, req)
        check_fits(backend, req, self.device)
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        # 1. conditions
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            enc_names = backend_encode_components(backend, req)
            for name in enc_names:
                stack.enter_context(policy.use(name))
            enc_device = policy.input_device(enc_names[0]) if enc_names else self.device
            with torch.no_grad():
                conds = backend.encode(self.components, req, inputs, enc_device)
        cond = _to_device(conds.cond, self.device)
        uncond = _to_device(conds.uncond, self.device) if conds.uncond is not None else None
        timings["encode"] = time.perf_counter() - t0

        # 2. noise, schedule, experts, guidance
        noise = _with_conditions(backend.initial_noise, conds)(req, self.device)
        schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)
        experts = backend.experts(self.components, req)
        component_of = {e.name: e.component for e in experts}
        for comp in dict.fromkeys(component_of.values()):
            reset_step_caches(self.components[comp])
        switch = _ComponentSwitch(policy, component_of)
        model = Experts([(e.name, wrap_network(e.network, e.prediction, schedule), e.boundary) for e in experts],
                        on_switch=switch)
        g_opts = dict(req.guidance_options)
        # a backend may ask for sequential passes (the official order); a memory policy may too
        batched = bool(g_opts.pop("batched", True)) and policy.batched_guidance
        guidance = Guidance(scale=req.guidance, batched=batched, **g_opts)
        par = self.parallel
        guided = (par.guide(guidance, model, cond, uncond, schedule) if par is not None
                  else guidance.wrap(model, cond, uncond, schedule))
        sampler = Sampler.get(req.sampler)
        generator = torch.Generator("cpu").manual_seed(req.seed + 1)

        # 3. sample
        t0 = time.perf_counter()
        bar = _progress_bar(req.steps, progress, backend.name)
        step_times: list[float] = []
        last = [time.perf_counter()]

        sigmas = schedule.sigmas

        def prefetch_before_switch(i: int) -> None:
            """While step i runs, put the expert of step i+1 in flight if it differs (no stall at the switch)."""
            if i + 1 < len(sigmas) - 1:
                now_e, next_e = model.expert_for(sigmas[i]), model.expert_for(sigmas[i + 1])
                if next_e != now_e:
                    policy.prefetch(component_of[next_e])

        def on_step(info: dict[str, Any]) -> None:
            prefetch_before_switch(int(info["i"]) + 1)
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(info)

        try:
            with torch.no_grad():
                switch(model.expert_for(schedule.sigmas[0]))
                prefetch_before_switch(0)
                x = schedule.prior(noise)
                latents = sampler(guided, x, schedule, callback=on_step, generator=generator, **req.sampler_options)
        finally:
            switch.close()
            if bar is not None:
                bar.close()
        timings["sample"] = time.perf_counter() - t0
        if step_times:
            timings["step_mean"] = sum(step_times) / len(step_times)

        # 4. decode
        t0 = time.perf_counter()
        split = par.decoding() if par is not None else contextlib.nullcontext()  # VAE tiles over the ranks
        with policy.use("vae") if "vae" in self.components else contextlib.nullcontext(), torch.no_grad(), split:
            frames = _with_conditions(backend.decode, conds)(self.components, latents, req)
        timings["decode"] = time.perf_counter() - t0
        if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
            raise RuntimeError(f"backend {backend.name!r} decode returned {frames.dtype} {tuple(frames.shape)}, "
                               "expected uint8 (B, T, H, W, 3)")
        record = self._record(req, time.perf_counter() - t_start, timings)
        return Video(frames[0].cpu(), req.fps, record)

    def load_lora(self, path: str | Path, *, scale: float = 1.0, components: list[str] | None = None,
                  mode: str = "hook") -> None:
        """Apply a LoRA file (any layout of `vidcore.lora.formats`) to the denoisers, or to ``components``
        (e.g. ``["high_noise"]``), on the fly or merged; its record entry (keys matched per component)
        is appended to ``self.loras``."""
        from .lora import LoraSpec, load_into

        load_into(self, LoraSpec(str(path), scale, tuple(components) if components else None, mode))

    def close(self) -> None:
        """Release what the memory policy holds (hooks, device copies of streamed blocks)."""
        self.policy.teardown()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------
    def _record(self, req: Request, wall: float, timings: dict[str, float]) -> dict[str, Any]:
        from .records import make_record

        try:
            plugin = backend_plugin(self.backend.name)
        except Exception:
            plugin = None
        ckpt = dict(self.checkpoint or {})
        if self.ckpt_dir is not None:
            ckpt.setdefault("dir", str(self.ckpt_dir))
        rec = make_record(request=req.to_dict(), plugin=plugin, memory=dict(self.policy.describe(),
                          preset=self.memory_name), dtype=dtype_name(self.dtype), device=self.device,
                          checkpoint=ckpt or None, wall_time_s=wall, timings=timings)
        rec["loras"] = list(self.loras)
        if self.parallel is not None:
            layout = self.parallel.layout
            rec["parallel"] = {k: getattr(layout, k) for k in ("world", "cfg", "ulysses", "ring") if hasattr(layout, k)}
        return rec


def _with_conditions(method: Callable[..., Any], conds: Any) -> Callable[..., Any]:
    """``method`` with ``conditions=conds`` bound when it accepts that keyword (older backends do not)."""
    import functools
    import inspect

    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return method
    if "conditions" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return functools.partial(method, conditions=conds)
    return method


def backend_encode_components(backend: Backend, req: Request) -> list[str]:
    """Components used while encoding conditions (text/image encoders; the VAE for image/video inputs)."""
    fn = getattr(backend, "encode_components", None)
    if callable(fn):
        return list(fn(req))
    names = [c for c in backend.components if c.startswith(("text_encoder", "image_encoder"))]
    if req.task in ("i2v", "ti2v", "predict") and "vae" in backend.components:
        names.append("vae")
    return names


def apply_vae_switches(components: Components, policy: MemoryPolicy) -> None:
    """Turn on the VAE tiling/chunking a policy asks for, on VAEs that expose ``tiling``/``chunked``.

    The convention for plugin VAEs: a boolean-ish ``tiling`` attribute (spatial tiles) and a
    ``chunked`` attribute (temporal chunks); a policy only ever switches them on.
    """
    for name, module in components.items():
        if not name.startswith("vae"):
            continue
        if policy.vae_tiling and hasattr(module, "tiling") and not module.tiling:
            module.tiling = True
        if policy.vae_chunking and hasattr(module, "chunked") and not module.chunked:
            module.chunked = True


def _progress_bar(total: int, progress: bool | None, desc: str):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def load(backend: str | Backend, ckpt: str | Path | None = None, *, memory: str | MemoryPolicy = "resident",
         dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
         verify: bool = True) -> Pipeline:
    """Load a backend's weights under a memory policy and return a ready `Pipeline`.

    ``ckpt`` is a checkpoint folder; without it, backends that ship their
    weights (the embedded demo) load them, and others look in the Hugging Face
    cache (`vidcore download` fills it).
    """
    if not isinstance(backend, (str, Backend)):
        raise InvalidRequestError(f"backend must be a backend name or a vidcore.Backend; got {backend!r}")
    if not isinstance(memory, (str, MemoryPolicy)):
        raise InvalidRequestError(f"memory must be a preset name (e.g. 'low-vram') or a MemoryPolicy; got {memory!r}")
    if ckpt is not None and not isinstance(ckpt, (str, Path)):
        raise InvalidRequestError(f"ckpt must be a checkpoint folder path; got {ckpt!r}")
    b = get_backend(backend) if isinstance(backend, str) else backend
    wdtype = parse_dtype(dtype)
    dev = parse_device(device)
    policy = get_policy(memory, wdtype)
    memory_name = memory if isinstance(memory, str) else getattr(memory, "name", "custom")
    ckpt_dir: Path | None = None
    checkpoint: dict[str, Any] | None = None
    if b.layout is not None:
        from .checkpoints import fingerprint
        from .hub import resolve_checkpoint
        from .manifest import verify as verify_dir

        ckpt_dir = resolve_checkpoint(b, ckpt)
        if verify:
            verify_dir(b, ckpt_dir).raise_if_bad()
        checkpoint = {"dir": str(ckpt_dir), "fingerprint": fingerprint(b.layout, ckpt_dir, name=b.name)}
    elif ckpt is not None:
        ckpt_dir = Path(ckpt)
        if not ckpt_dir.exists():
            raise InvalidRequestError(f"checkpoint folder {str(ckpt_dir)!r} does not exist")
    t0 = time.perf_counter()
    b = b.for_checkpoint(ckpt_dir)  # a backend whose files say what the model is binds a copy; never the registered one
    components = b.load(ckpt_dir, policy.placement(dev, b.default_dtype if wdtype is None else wdtype))
    policy.setup(components, dev)
    apply_vae_switches(components, policy)
    for module in components.values():
        module.eval().requires_grad_(False)
    log.info("loaded %s in %.1f s (memory=%s, dtype=%s, device=%s)", b.name, time.perf_counter() - t0,
             memory_name, dtype_name(wdtype), dev)
    return Pipeline(b, components, policy, dev, dtype=wdtype, ckpt_dir=ckpt_dir, checkpoint=checkpoint,
                    memory_name=memory_name)
