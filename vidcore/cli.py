"""The command line: backends, generate, batch, download, inspect, verify, bench, serve, doctor (+ plugin commands).

Every user error ends in one line on stderr and exit status 2, raised before
any weights load; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from .distributed.runtime import add_arguments as add_parallel_arguments
from .errors import Cancelled, VidcoreError, is_out_of_memory
from .plugins import DEFAULT_BACKEND, DEFAULT_BACKEND_HINT


def _out(text: str = "") -> None:
    print(text, flush=True)


# -- backends ---------------------------------------------------------------------------------
def cmd_backends(args: argparse.Namespace) -> int:
    from .plugins import backend_plugin, backends, plugin_status
    from .presets import presets_for

    table = backends()
    broken = [p for p in plugin_status() if not p.ok]
    if args.json:
        data = {
            "backends": [dict(b.describe(), plugin=backend_plugin(n), presets=sorted(presets_for(n)))
                         for n, b in table.items()],
            "plugins": [{"name": p.name, "version": p.version, "ok": p.ok, "error": p.error} for p in plugin_status()],
        }
        _out(json.dumps(data, indent=2))
    else:
        if not table:
            _out("no backends installed; " + DEFAULT_BACKEND_HINT)
        for name, b in table.items():
            d = b.defaults
            _out(f"{name:<22} {','.join(b.tasks):<12} {d.size[0]}x{d.size[1]} {d.frames}f {d.steps} steps "
                 f"{d.sampler}  [{backend_plugin(name)}] {b.description}")
    for p in broken:
        print(f"warning: {p.error}", file=sys.stderr)
    return 0


# -- generate ---------------------------------------------------------------------------------
def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "video"


def cmd_generate(args: argparse.Namespace) -> int:
    import contextlib

    from .distributed import init_from_args
    from .errors import InvalidRequestError
    from .fileio import check_output_path, claim
    from .lora import LoraSpec
    from .memory import get_policy
    from .pipeline import load
    from .plugins import backends, get_backend
    from .records import read_record, replay_settings
    from .request import check_fits, check_schedule_fits_model, load_inputs, parse_device, parse_dtype, resolve
    from .video import record_path

    memory, dtype = args.memory, args.dtype
    loras = [LoraSpec.parse(spec) for spec in (args.lora or [])]
    if args.from_record:
        if args.preset is not None:
            raise InvalidRequestError("--preset cannot change a replay: the record holds the resolved settings "
                                      "(drop --preset, or generate from a prompt)")
        replay = replay_settings(read_record(args.from_record), source=f"run record {args.from_record!r}")
        backend, req = replay["backend"], replay["request"]
        memory = memory or replay["memory"] or "resident"
        dtype = dtype or replay["dtype"]
        ckpt = args.ckpt or replay["ckpt"]
        out = Path(args.out or Path(args.from_record).with_name(Path(args.from_record).stem + "-replay.mp4"))
        loras = loras or replay["loras"]
        if args.cache is not None:  # the one setting a replay may change: how much work it skips
            from .cache_spec import check_cache_spec

            req.cache = check_cache_spec(args.cache)
    else:
        if args.prompt is None:
            raise VidcoreError("generate needs a PROMPT (or --from-record RUN.json)")
        name = args.backend or DEFAULT_BACKEND
        if args.backend is None and name not in backends():
            raise VidcoreError(DEFAULT_BACKEND_HINT)
        backend = get_backend(name)
        req = resolve(backend, args.prompt, image=args.image, video=args.video, size=args.size,
                      frames=args.frames, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                      negative=args.negative, seed=args.seed, schedule=args.schedule, shift=args.shift,
                      preset=args.preset, cache=args.cache)
        ckpt = args.ckpt
        out = Path(args.out or f"{_slug(args.prompt)}-{req.seed}.mp4")
        memory = memory or "resident"
    # everything cheap is checked before any weights load
    check_output_path(out, suffix=".mp4", overwrite=args.overwrite)
    get_policy(memory, parse_dtype(dtype))
    device = parse_device(args.device)
    inputs = load_inputs(backend, req)
    check_fits(backend, req, device)
    check_schedule_fits_model(backend, req)
    _check_loras(backend, loras)
    par = init_from_args(args, backend)  # torchrun: checks --ulysses/--ring/--cfg-parallel; None on one process
    if par is not None:
        req = par.same_request(req)  # every rank uses rank 0's seed
    writer = par is None or par.is_writer
    with claim(out) if writer else contextlib.nullcontext():  # busy: one line, before the weights load
        if writer:  # under the claim: another run may have finished this output since the first check
            check_output_path(out, suffix=".mp4", overwrite=args.overwrite)
            if record_path(out).exists() and not args.overwrite:
                raise InvalidRequestError(f"{str(record_path(out))!r} already exists; pass --overwrite to replace "
                                          "it or choose another --out")
        pipe = load(backend, ckpt, memory=memory, dtype=dtype, device=par.device if par else device, parallel=par)
        for spec in loras:
            pipe.load_lora(spec.path, scale=spec.scale, components=list(spec.components or []), mode=spec.mode)
            if writer and not args.quiet:
                _report_lora(pipe.loras[-1])
        try:
            video = pipe.run(req, inputs, progress=False if args.quiet or not writer else None)
            if writer:
                _out(str(video.save(out, overwrite=args.overwrite, lossless=args.lossless)))
        finally:
            pipe.close()
            if par is not None:
                par.close()
    return 0


def _check_loras(backend: Any, loras: list[Any]) -> None:
    """Each LoRA file readable, and every key of it matched in its components (a meta build), before any
    weight loads."""
    from .lora import check_loras

    for spec in loras:
        _check_lora_file(spec.path)
    check_loras(backend, loras)


def _report_lora(entry: dict[str, Any]) -> None:
    matched = ", ".join(f"{comp} {n}" for comp, n in entry["matched"].items())
    print(f"LoRA {Path(entry['path']).name} (scale {entry['scale']:g}): {entry['keys']} keys; matched {matched}",
          file=sys.stderr)


def _check_lora_file(path: str) -> None:
    """A LoRA must be a readable safetensors file with a sound header; checked before the model loads."""
    from .checkpoints import read_header

    p = Path(path)
    if not p.is_file():
        raise VidcoreError(f"LoRA file {path!r} does not exist" + (" (it is a folder)" if p.is_dir() else ""))
    if p.suffix != ".safetensors":
        raise VidcoreError(f"LoRA file {p.name!r} is not .safetensors; convert it to safetensors first")
    if not read_header(p):
        raise VidcoreError(f"LoRA file {path!r} holds no tensors")


def _memory_help() -> str:
    from .memory.lookup import preset_names

    return ("where weights live (default resident); presets add up with '+', e.g. offload+fp8. Installed: "
            + ", ".join(preset_names()))


def _preset_help() -> str:
    from .plugins import registry
    from .presets import KIND

    table = registry().entries[KIND]
    names = ", ".join(f"{n} ({', '.join(e.obj.settings)})" for n, e in sorted(table.items())) or "none installed"
    return ("a named recipe of settings (steps, guidance, shift, sampler) from a model's release; flags you give "
            f"still win; the record keeps the resolved settings. Installed: {names}")


# -- download / inspect / verify --------------------------------------------------------------
def cmd_download(args: argparse.Namespace) -> int:
    from .hub import download
    from .plugins import get_backend

    path = download(get_backend(args.backend), Path(args.dir) if args.dir else None)
    _out(str(path))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .manifest import manifest
    from .plugins import get_backend

    data = manifest(get_backend(args.backend))
    if args.json:
        _out(json.dumps(data, indent=2))
        return 0
    for comp, tensors in data.items():
        total = 0
        for name, info in tensors.items():
            n = 1
            for s in info["shape"]:
                n *= s
            total += n
            _out(f"{comp}\t{name}\t{tuple(info['shape'])}\t{info['dtype']}")
        _out(f"# {comp}: {len(tensors)} tensors, {total:,} parameters")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .manifest import verify
    from .plugins import get_backend

    report = verify(get_backend(args.backend), Path(args.dir))
    if args.json:
        _out(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            _out(line)
    return 0 if report.ok else 1


# -- batch ------------------------------------------------------------------------------------
def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .plugins import backends

    name = args.backend or DEFAULT_BACKEND
    if args.backend is None and name not in backends():
        raise VidcoreError(DEFAULT_BACKEND_HINT)
    from .lora import LoraSpec

    loras = [LoraSpec.parse(spec) for spec in (args.lora or [])]
    for spec in loras:
        _check_lora_file(spec.path)
    summary = run_batch(args.prompts, args.out, backend=name, ckpt=args.ckpt, memory=args.memory,
                        dtype=args.dtype, device=args.device, base_seed=args.seed,
                        progress=False if args.quiet else None, loras=loras, batch_size=args.batch_size)
    _out(summary.line())
    for name in summary.failed:
        print(f"failed: {name} (see {name}.error.json)", file=sys.stderr)
    return 1 if summary.failed else 0


# -- doctor -----------------------------------------------------------------------------------
def doctor_report() -> dict[str, Any]:
    import importlib.metadata
    import platform

    import torch

    from . import __version__
    from .attention import attention_backends
    from .memory import preset_names
    from .plugins import names, plugin_status, sampler_names

    def version_of(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(total / 2**30, 1), "free_gib": round(free / 2**30, 1)})
    return {
        "python": platform.python_version(),
        "vidcore": __version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "flash_attn": version_of("flash-attn") or version_of("flash_attn"),
        "triton": version_of("triton"),
        "attention_backends": attention_backends(),
        "samplers": sampler_names(),
        "schedules": names("schedule"),
        "memory_presets": preset_names(),
        "plugins": [{"name": p.name, "version": p.version, "ok": p.ok, "error": p.error,
                     "registered": p.registered} for p in plugin_status()],
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    rep = doctor_report()
    if args.json:
        _out(json.dumps(rep, indent=2))
    else:
        _out(f"python   {rep['python']}")
        _out(f"vidcore  {rep['vidcore']}")
        _out(f"torch    {rep['torch']} (CUDA {rep['cuda'] or 'none'}; available: {rep['cuda_available']})")
        for g in rep["gpus"]:
            _out(f"gpu{g['index']}     {g['name']} sm_{g['capability']} {g['memory_gib']} GiB "
                 f"({g['free_gib']} GiB free)")
        _out(f"flash-attn {rep['flash_attn'] or 'not installed'}; triton {rep['triton'] or 'not installed'}")
        _out(f"attention {', '.join(rep['attention_backends'])}")
        _out(f"samplers  {', '.join(rep['samplers'])}")
        _out(f"schedules {', '.join(rep['schedules'])}")
        _out(f"memory    {', '.join(rep['memory_presets'])}")
        for p in rep["plugins"]:
            state = "ok" if p["ok"] else f"BROKEN: {p['error']}"
            _out(f"plugin   {p['name']} {p['version'] or ''} {state}")
    return 0 if all(p["ok"] for p in rep["plugins"]) else 1


# -- parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _Parser)
        return super().add_subparsers(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidcore", description="Run open video diffusion models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details; show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    verbose = _Parser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress details; show tracebacks")
    sub.add_parser = functools.partial(sub.add_parser, parents=[verbose])

    p = sub.add_parser("backends", help="list installed backends")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("generate", help="generate a video")
    p.add_argument("prompt", nargs="?", metavar="PROMPT")
    p.add_argument("--backend", help=f"backend name (default: the embedded {DEFAULT_BACKEND})")
    p.add_argument("--ckpt", metavar="DIR", help="checkpoint folder (default: the Hugging Face cache)")
    p.add_argument("--image", metavar="PATH", help="input image for image-to-video")
    p.add_argument("--video", metavar="PATH", help="past frames for prediction")
    p.add_argument("--size", metavar="WxH", help="width x height, e.g. 832x480 (default: the backend's official size; "
                   "`vidcore backends` lists each backend's defaults and accepted sizes)")
    p.add_argument("--frames", type=int, metavar="N", help="frame count (default: the backend's, e.g. 81; Wan and "
                   "HunyuanVideo take 4n+1)")
    p.add_argument("--steps", type=int, metavar="N", help="sampling steps (default: the backend's official count)")
    p.add_argument("--sampler", metavar="NAME", help="flow_euler, euler, heun, dpmpp_2m, unipc, ddim, ddpm or a "
                   "plugin's (default: the backend's)")
    p.add_argument("--schedule", metavar="NAME", help="noise schedule (default: the backend's, e.g. flow)")
    p.add_argument("--shift", type=float, metavar="X", help="flow schedule shift (default: the backend's)")
    p.add_argument("--guidance", type=float, metavar="X", help="classifier-free guidance scale; 1 turns it off "
                   "(one pass per step) (default: the backend's)")
    p.add_argument("--negative", metavar="TEXT", help="negative prompt (default: the backend's official one)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default: a random one, written in the run "
                   "record so the video can be made again)")
    p.add_argument("--memory", metavar="PRESET", help=_memory_help())
    p.add_argument("--dtype", metavar="D", help="weight dtype: fp32, bf16 or fp16")
    p.add_argument("--device", metavar="DEV", help="torch device (default: cuda if available)")
    p.add_argument("--out", metavar="PATH.mp4")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--lossless", action="store_true",
                   help="store the frames exactly (H.264 RGB, qp 0; several times larger, plays in ffmpeg/VLC/mpv, "
                        "not most browsers); the default, H.264 yuv420p at crf 18, keeps colour at half the width "
                        "and height and is visually lossless, not exact (pixels differ by a few levels, more at sharp "
                        "colour edges)")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE][@COMPONENT]",
                   help="apply a LoRA file (repeatable): PEFT/diffusers, kohya/ComfyUI, musubi or LightX2V names; "
                        "@COMPONENT puts it on one expert only, e.g. high.safetensors@high_noise (default: every "
                        "denoiser); see docs/lora.md")
    p.add_argument("--preset", metavar="NAME", help=_preset_help())
    p.add_argument("--cache", metavar="KIND:THRESHOLD",
                   help="step cache: teacache:T (published per-model coefficients where they exist) or "
                        "first-block:T; skips a step's blocks while their input barely changes (e.g. teacache:0.2)")
    p.add_argument("--from-record", metavar="RUN.json", help="reproduce the run a record describes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_parallel_arguments(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("batch", help="generate one video per JSONL line; resumable; shards over torchrun ranks")
    p.add_argument("prompts", metavar="PROMPTS.jsonl")
    p.add_argument("--out", metavar="DIR", required=True)
    p.add_argument("--backend", metavar="NAME")
    p.add_argument("--ckpt", metavar="DIR")
    p.add_argument("--memory", metavar="PRESET", default="resident")
    p.add_argument("--dtype", metavar="D")
    p.add_argument("--device", metavar="DEV")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="base seed: line i uses N+i unless it sets one")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE][@COMPONENT]",
                   help="apply a LoRA file to every line's run (repeatable; as for generate). A line may set "
                        '"preset" and "cache" like the generate flags')
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="denoise up to N lines of the same shape together (GPU throughput; default 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("download", help="fetch a backend's checkpoint files")
    p.add_argument("backend", metavar="BACKEND")
    p.add_argument("--dir", metavar="DIR", help="target folder (default: the Hugging Face cache)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("inspect", help="every tensor of every component at full size (meta device)")
    p.add_argument("backend", metavar="BACKEND")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check a checkpoint folder against the backend, without loading")
    p.add_argument("backend", metavar="BACKEND")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="time a backend's full-size denoiser (random weights) under memory presets")
    from .bench import command as bench_command

    bench_command.configure(p)
    p.set_defaults(func=bench_command.run)

    p = sub.add_parser("serve", help="serve OpenAI's videos API over a durable job queue (the serve extra)")
    from .serve import command as serve_command

    serve_command.configure(p)
    p.set_defaults(func=serve_command.run)

    p = sub.add_parser("doctor", help="report the environment, accelerators and plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    from .plugins import commands

    for name, entry in sorted(commands().items()):
        if name in sub.choices:
            logging.getLogger(__name__).warning("plugin %r tried to replace command %r; ignored", entry.plugin, name)
            continue
        configure, run = entry.obj
        p = sub.add_parser(name, help=entry.extra.get("help", f"(from plugin {entry.plugin})"))
        try:
            configure(p)
        except Exception as exc:
            logging.getLogger(__name__).warning("plugin %r command %r: %s", entry.plugin, name, exc)
            continue
        p.set_defaults(func=lambda a, _run=run: _run(a))


#: errno values that mean the machine, not vidcore, refused (disk full, permissions, names)
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG,
                       errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EMFILE, errno.ENFILE,
                       errno.EIO, errno.EBUSY, errno.ETXTBSY, errno.ENOTEMPTY, errno.EXDEV}


def _environment_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    hint = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space (quota)",
            errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
            errno.EROFS: "the disk is read-only; write elsewhere",
            errno.ENAMETOOLONG: "choose a shorter name"}.get(exc.errno or 0, "check the path")
    return f"{exc.strerror or exc}{where}; {hint}"


def log_dir() -> Path:
    """Where crash logs go: ``$VIDCORE_LOG_DIR``, else the user's cache folder."""
    import os

    if os.environ.get("VIDCORE_LOG_DIR"):
        return Path(os.environ["VIDCORE_LOG_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vidcore" / "logs"


def _crash_log(argv: list[str], text: str) -> Path | None:
    """Write the traceback of a bug to a new file in `log_dir`; None when even that fails."""
    import datetime
    import os
    import tempfile

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"vidcore-crash-{stamp}-{os.getpid()}.log"
            path.write_text(f"vidcore {' '.join(argv)}\n\n{text}")
            return path
        except OSError:
            continue
    return None


def _bug(argv: list[str], exc: BaseException, verbose: bool) -> int:
    text = traceback.format_exc()
    if verbose:
        print(text, file=sys.stderr, end="")
    path = _crash_log(argv, text)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    where = f"the traceback is in {path}" if path else "rerun with -v to see the traceback"
    print(f"error: internal error ({type(exc).__name__}: {first}); this is a bug in vidcore or a plugin, not in "
          f"your input; {where}; please report it", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error already printed in one line
            return exc.code if isinstance(exc.code, int) else 2
        verbose = bool(getattr(args, "verbose", False))
        if verbose:
            logging.getLogger().setLevel(logging.INFO)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except VidcoreError as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Cancelled:
        print("cancelled; nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _bug(argv, exc, verbose)
        if verbose:
            traceback.print_exc()
        print(f"error: {_environment_error(exc)}", file=sys.stderr)
        return 2
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything else is ours to own up to
        if is_out_of_memory(exc):
            if verbose:
                traceback.print_exc()
            print("error: out of memory; use a leaner --memory preset (e.g. low-vram), a smaller --size or fewer "
                  "--frames", file=sys.stderr)
            return 2
        return _bug(argv, exc, verbose)


if __name__ == "__main__":
    raise SystemExit(main())
