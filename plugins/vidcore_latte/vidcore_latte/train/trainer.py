"""The training loop shared by the DiT, the U-Net and the VAE.

Every random choice for a training sample (its clip, condition dropout,
prediction context, noise level and noise) is drawn from a generator seeded by
``(seed, global sample index)``. Hence a run resumed from a checkpoint
continues with exactly the same losses, and DDP over N ranks sees the same
samples, and computes the same loss, as one process with the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..data.source import make_source
from ..system import build_components, flat_state, load_model, save_model, split_state
from .config import TrainConfig
from .ema import EMA
from .objectives import Objective

log = logging.getLogger(__name__)


def sample_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + int(index)) % (2**63 - 1))


class DenoiserStep(nn.Module):
    """Text encoder + denoiser as one module, so DDP sees every trained parameter in one forward."""

    def __init__(self, components: dict[str, nn.Module]):
        super().__init__()
        self.text_encoder = components.get("text_encoder")
        self.denoiser = components["denoiser"]

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, ids: torch.Tensor | None,
                cond_frames: torch.Tensor | None, cond_mask: torch.Tensor | None) -> torch.Tensor:
        context = self.text_encoder(ids) if self.text_encoder is not None and ids is not None else None
        kwargs = {}
        if cond_frames is not None:
            kwargs = {"cond_frames": cond_frames, "cond_mask": cond_mask}
        return self.denoiser(x, timestep, context=context, **kwargs)


class VAEStep(nn.Module):
    def __init__(self, components: dict[str, nn.Module]):
        super().__init__()
        self.vae = components["vae"]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        return self.vae.reconstruct(x, generator=generator)


def lr_lambda(config: TrainConfig):
    def fn(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


class Trainer:
    """``Trainer(config).run()`` trains, checkpoints and (on rank 0) logs; ``resume=True`` continues."""

    def __init__(self, config: TrainConfig, resume: bool = True):
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.rank, self.world = _dist_info()
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.out = Path(config.out)
        torch.manual_seed(config.seed)
        self.components = build_components(config.model, self.device)
        self.frozen: dict[str, nn.Module] = {}
        if config.task == "denoiser" and config.model.vae is not None:
            self.components.pop("vae")
            if config.vae_model is None:
                raise ValueError("a latent denoiser needs vae_model: the file of a trained VAE")
            self.frozen["vae"] = load_model(config.vae_model, self.device)[0]["vae"].requires_grad_(False)
        self.module = DenoiserStep(self.components) if config.task == "denoiser" else VAEStep(self.components)
        self.module.train()
        self.objective = Objective(config.model.prediction, config.model.process, **_objective_options(config))
        self.source = make_source(config.data, config.data_seed, config.model.frames, config.model.size,
                                  shape_radius=config.shape_radius)
        if config.train_only:
            freeze_except(self.module_for_state(), config.train_only)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.ema = EMA(self.module_for_state(), config.ema_decay)
        self.step = 0
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.module, device_ids=ids)
        self.writer = None
        if not (resume and self.try_resume()) and config.init:
            self.init_from(config.init)

    # -- state -----------------------------------------------------------------------------
    def module_for_state(self) -> nn.Module:
        return nn.ModuleDict(self.components)

    def checkpoint_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step-{step:07d}"

    def save(self) -> Path:
        """model.safetensors (raw weights), ema.safetensors, trainer.pt (optimizer, scheduler, RNG)."""
        path = self.checkpoint_dir(self.step)
        if self.rank != 0:
            return path
        tmp = path.with_name(path.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = self.config.model
        extra = {"train_config": json.dumps(self.config.to_dict()), "step": str(self.step)}
        save_model(tmp / "model.safetensors", self.components, cfg, extra=extra)
        ema = {k: v for k, v in self.ema.state_dict().items()}
        save_model(tmp / "ema.safetensors", self.components, cfg, state=ema, extra=extra)
        torch.save({
            "step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema_updates": self.ema.updates, "rng": torch.get_rng_state(),
        }, tmp / "trainer.pt")
        if path.exists():
            _rmtree(path)
        tmp.rename(path)
        (self.out / "checkpoints" / "last").write_text(path.name)
        old = sorted(p for p in (self.out / "checkpoints").glob("step-*") if p.is_dir() and p.suffix != ".tmp")
        for stale in old[: -self.config.keep]:
            _rmtree(stale)
        return path

    def try_resume(self) -> bool:
        marker = self.out / "checkpoints" / "last"
        if not marker.exists():
            return False
        self.load_checkpoint(self.out / "checkpoints" / marker.read_text().strip())
        return True

    def init_from(self, path: str) -> None:
        """Start from trained weights (fine-tuning): fresh optimizer, schedule and EMA (from these weights).

        Modules the file lacks (e.g. a refiner added to a trained network) keep their
        initialisation; a tensor of the wrong shape, or one the model does not have, is an error.
        """
        from safetensors.torch import load_file

        state = split_state(load_file(str(path)))
        for name, module in self.components.items():
            missing, unexpected = module.load_state_dict({k: v.float() for k, v in state.get(name, {}).items()},
                                                         strict=False)
            if unexpected:
                raise ValueError(f"{path}: {name} has no parameters {unexpected[:3]}; is it this model's file?")
            if missing:
                log.info("init %s from %s; %d tensors new (e.g. %s)", name, path, len(missing), missing[0])
        self.ema = EMA(self.module_for_state(), self.config.ema_decay)

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = split_state(load_file(str(path / "model.safetensors")))
        for name, module in self.components.items():
            module.load_state_dict(state[name])
        ema = load_file(str(path / "ema.safetensors"))
        extra = torch.load(path / "trainer.pt", weights_only=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.scaler.load_state_dict(extra["scaler"])
        self.ema.load_state_dict(ema, extra["ema_updates"])
        torch.set_rng_state(extra["rng"])
        self.step = int(extra["step"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- one step ----------------------------------------------------------------------------
    def indices(self, step: int, micro: int) -> list[int]:
        """Global sample indices this rank handles in ``micro``-batch ``micro`` of ``step``."""
        c = self.config
        per_micro = c.batch // c.grad_accum
        if per_micro % self.world:
            raise ValueError(f"micro-batch {per_micro} is not divisible by {self.world} ranks")
        per_rank = per_micro // self.world
        start = step * c.batch + micro * per_micro + self.rank * per_rank
        return list(range(start, start + per_rank))

    def prepare(self, indices: list[int]) -> dict:
        """Load, encode and noise the clips of ``indices`` (every draw from the per-sample generators)."""
        c = self.config
        xs, texts, frames_known = [], [], []
        gens = [sample_generator(c.seed, g) for g in indices]
        cache = self.latent_cache()
        for g, gen in zip(indices, gens):
            if cache is not None:
                item = {"video": cache[0][g % len(cache[1])], "caption": cache[1][g % len(cache[1])]}
                xs.append(item["video"])
            else:
                item = self.source.item(g)
                xs.append(item["video"].permute(3, 0, 1, 2) * 2 - 1)  # (C, T, H, W) in [-1, 1]
            drop = torch.rand((), generator=gen).item() < c.cond_dropout
            texts.append("" if drop else item["caption"])
            predict = torch.rand((), generator=gen).item() < c.predict_prob
            k = int(torch.randint(1, c.max_context_frames + 1, (), generator=gen)) if predict else 0
            frames_known.append(k)
        x0 = torch.stack(xs).to(self.device)
        if c.task == "vae":
            return {"x0": x0, "gens": gens}
        if "vae" in self.frozen and cache is None:
            with torch.no_grad():
                x0 = self.frozen["vae"].encode_latents(x0, generator=None)
        if "vae" in self.frozen:
            x0 = (x0 - c.model.latent_shift) * c.model.latent_scale
        parts = [self.objective.sample(x0[i: i + 1], gens[i]) for i in range(len(indices))]
        x_t = torch.cat([p[0] for p in parts])
        timestep = torch.cat([p[1] for p in parts])
        target = torch.cat([p[2] for p in parts])
        T = x0.shape[2]
        mask = torch.zeros(len(indices), 1, T, 1, 1, device=self.device)
        for i, k in enumerate(frames_known):
            mask[i, :, : min(k, T - 1)] = 1
        ids = None
        if self.components.get("text_encoder") is not None:
            ids = self.components["text_encoder"].tokenizer(texts).to(self.device)
        uses_frames = getattr(getattr(self.components["denoiser"], "config", None), "frame_conditioning", False)
        return {"x_t": x_t, "timestep": timestep, "target": target, "ids": ids, "x0": x0,
                "cond_frames": x0 if uses_frames else None, "cond_mask": mask if uses_frames else None,
                "weight": 1 - mask}

    def latent_cache(self) -> tuple[torch.Tensor, list[str]] | None:
        """Latents of samples 0..cache_size-1 from the frozen VAE, computed once into ``latent_cache``.

        Sample ``g`` then uses cached latent ``g % cache_size``: the VAE runs once per clip
        instead of once per step, at the price of a finite set of clips.
        """
        c = self.config
        if c.latent_cache is None or "vae" not in self.frozen:
            return None
        if getattr(self, "_cache", None) is None:
            from safetensors import safe_open
            from safetensors.torch import save_file

            path = Path(c.latent_cache)
            if not path.exists() and self.rank == 0:
                lat, caps = [], []
                with torch.no_grad():
                    for g in range(c.cache_size):
                        item = self.source.item(g)
                        x = item["video"].permute(3, 0, 1, 2)[None].to(self.device) * 2 - 1
                        lat.append(self.frozen["vae"].encode_latents(x)[0].cpu())
                        caps.append(item["caption"])
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"latents": torch.stack(lat)}, str(path), metadata={"captions": json.dumps(caps)})
                log.info("cached %d latents in %s", len(lat), path)
            if self.world > 1:
                torch.distributed.barrier()
            with safe_open(str(path), "pt") as f:
                self._cache = (f.get_tensor("latents"), json.loads(f.metadata()["captions"]))
        return self._cache

    def losses(self, batch: dict) -> torch.Tensor:
        """Per-sample losses (B,), in float32."""
        module = self.ddp or self.module
        amp = self.config.amp
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
               if amp != "none" else nullcontext())
        with ctx:
            if self.config.task == "vae":
                gen = batch["gens"][0]
                recon, kl = module(batch["x0"], generator=gen)
                l1 = (recon.float() - batch["x0"]).abs().flatten(1).mean(1)
                return l1 + self.config.kl_weight * kl.float()
            pred = module(batch["x_t"], batch["timestep"], batch["ids"], batch["cond_frames"], batch["cond_mask"])
        err = (pred.float() - batch["target"].float()) ** 2
        w = batch["weight"].expand_as(err[:, :1]).expand_as(err)
        return (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1)

    def train_step(self) -> float:
        """One optimizer step over the global batch; returns the global mean loss."""
        c = self.config
        total = torch.zeros((), dtype=torch.float64)
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(c.grad_accum):
            batch = self.prepare(self.indices(self.step, micro))
            sync = self.ddp is None or micro == c.grad_accum - 1
            with (nullcontext() if sync else self.ddp.no_sync()):
                per_sample = self.losses(batch)
                loss = per_sample.sum() / c.batch * self.world  # DDP averages gradients over ranks
                self.scaler.scale(loss).backward()
            total += per_sample.detach().double().sum().cpu()
        if self.world > 1:
            torch.distributed.all_reduce(total)
        self.scaler.unscale_(self.optimizer)
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update(self.module_for_state())
        self.step += 1
        return float(total / c.batch)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, steps: int | None = None, callback=None) -> list[float]:
        """Train until ``steps`` (default: config.steps) and save; returns this call's losses."""
        c = self.config
        end = c.steps if steps is None else min(c.steps, steps)
        losses: list[float] = []
        bar = _progress(self.step, end, self.rank)
        t0 = time.time()
        while self.step < end:
            loss = self.train_step()
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if self.rank == 0 and (self.step % c.log_every == 0 or self.step == end):
                self._log({"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                           "elapsed_s": round(time.time() - t0, 1)})
            if c.save_every and self.step % c.save_every == 0:
                self.save()
            if c.sample_every and self.step % c.sample_every == 0 and self.rank == 0:
                self.write_samples()
            if callback is not None:
                callback(self, loss)
        if bar is not None:
            bar.close()
        if self.step == end and (not c.save_every or self.step % c.save_every):
            self.save()
        return losses

    def _log(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is None:
            self.writer = _tensorboard(self.out / "tb")
        if self.writer is not False:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
            self.writer.flush()
        log.info("step %(step)d loss %(loss).5f lr %(lr).2e", record)

    def write_samples(self) -> list[Path]:
        """Validation clips from the EMA weights, written as mp4 under ``out/samples``."""
        from ..validation import write_validation

        return write_validation(self, self.out / "samples" / f"step-{self.step:07d}")

    def ema_components(self) -> dict[str, nn.Module]:
        comps = build_components(self.config.model, self.device)
        if self.config.task == "denoiser" and self.config.model.vae is not None:
            comps.pop("vae")
        state = split_state(self.ema.state_dict())
        for name, module in comps.items():
            module.load_state_dict(state[name])
            module.eval()
        return {**comps, **self.frozen}


def freeze_except(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Train only the parameters under these name prefixes (fine-tuning a head over a fixed network).

    Frozen parameters get no gradients, so autograd skips their backward pass: training
    a small head over a frozen transformer costs little more than the transformer's forward.
    """
    params = dict(model.named_parameters())
    trained: set[str] = set()
    for prefix in prefixes:
        under = {name for name in params if name == prefix or name.startswith(prefix + ".")}
        if not under:
            roots = sorted({".".join(name.split(".")[:2]) for name in params})
            raise ValueError(f"train_only: no parameters under {prefix!r}; some prefixes: {roots[:12]}")
        trained |= under
    for name, param in params.items():
        param.requires_grad_(name in trained)


def _objective_options(config: TrainConfig) -> dict:
    return {"shift": config.time_shift, "logit_mean": config.logit_mean, "logit_std": config.logit_std,
            "blur_prob": config.blur_prob, "blur_sigma": config.blur_sigma}


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _progress(start: int, end: int, rank: int):
    if rank != 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=end, initial=start, desc="train", mininterval=30 if not os.isatty(2) else 0.5,
                dynamic_ncols=True)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard missing: the jsonl log still records everything
        return False
    return SummaryWriter(str(path))


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


__all__ = ["Trainer", "TrainConfig", "flat_state"]
