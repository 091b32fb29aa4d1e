#!/usr/bin/env python3
"""Regenerate docker/constraints.txt: every third-party Python package the images install, pinned.

Why: an image rebuilt next month must get the packages CI tested, not whatever
PyPI serves that day. `docker/install.sh` installs with ``-c constraints.txt``,
so each image installs only what its plugin set needs, at these versions.

Inputs: ``docker/requirements.in`` (torch, flash-attn, build tools) plus the
runtime requirements of every ``pyproject.toml`` in the repository (the core's
dependencies and extras except ``dev``, each plugin's dependencies and extras),
minus our own packages, which are built from the checkout.

How: pip's own resolver (``pip install --dry-run --report``) in a scratch
virtual environment with a pinned pip, told to resolve for the image's
platform (Linux x86_64, manylinux up to glibc 2.35 = Ubuntu 22.04, CPython
3.11) with binary wheels only, so the result does not depend on the machine
that runs it. Only package metadata is fetched, never the wheels.

torch's CUDA libraries (``nvidia-*``, ``cuda-*``) are left out on purpose:
PyPI's torch is a CUDA 13 build, the images use the CUDA 12.6 build from the
PyTorch index, and every torch wheel pins its own CUDA libraries exactly, so
the torch pin determines them. The pure-Python dependencies of torch are the
same for every CUDA variant and are pinned here.

Usage: python docker/lock.py [--output FILE] [--pip-version X] [--check]
Needs network access to the package index (metadata only) and Python >= 3.11.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "docker" / "requirements.in"
OUTPUT = ROOT / "docker" / "constraints.txt"
PIP_VERSION = "26.3"
PYTHON_VERSION = "3.11"
MAX_GLIBC_MINOR = 35  # Ubuntu 22.04, the base of nvidia/cuda:*-ubuntu22.04
LEGACY_MANYLINUX = ("manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64")
VARIANT_SPECIFIC = re.compile(r"^(nvidia-|cuda-)")
PIN_ONLY_MARK = "# lock: pin-only"


def normalize(name: str) -> str:
    """PEP 503 name normalisation, so `Foo_Bar` and `foo-bar` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read a package name from requirement {requirement!r}")
    return normalize(match.group(1))


def pyproject_files(root: Path = ROOT) -> list[Path]:
    """The core's pyproject.toml and each plugin's, in a stable order."""
    return [root / "pyproject.toml", *sorted((root / "plugins").glob("*/pyproject.toml"))]


def own_packages(root: Path = ROOT) -> set[str]:
    return {normalize(tomllib.loads(p.read_text())["project"]["name"]) for p in pyproject_files(root)}


def repo_requirements(root: Path = ROOT) -> list[str]:
    """Third-party runtime requirements of every package in the repository (extras except `dev`)."""
    ours = own_packages(root)
    found: list[str] = []
    for path in pyproject_files(root):
        project = tomllib.loads(path.read_text())["project"]
        groups = [project.get("dependencies", [])]
        groups += [reqs for extra, reqs in project.get("optional-dependencies", {}).items() if extra != "dev"]
        for reqs in groups:
            found += [r for r in reqs if req_name(r) not in ours]
    return list(dict.fromkeys(found))


def read_inputs(path: Path = INPUTS) -> tuple[list[str], list[str]]:
    """Requirements to resolve, and pins copied verbatim (marked ``# lock: pin-only``)."""
    resolve, pin_only = [], []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        (pin_only if PIN_ONLY_MARK in raw else resolve).append(line)
    for pin in pin_only:
        if "==" not in pin:
            raise SystemExit(f"{path}: a pin-only line must pin an exact version: {pin!r}")
    return resolve, pin_only


def platform_args() -> list[str]:
    args = []
    for minor in range(MAX_GLIBC_MINOR, 4, -1):
        args += ["--platform", f"manylinux_2_{minor}_x86_64"]
    for legacy in LEGACY_MANYLINUX:
        args += ["--platform", legacy]
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    return args + ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi]


def resolve(requirements: list[str], pip_version: str) -> list[tuple[str, str]]:
    """Run pip's resolver for the target platform in a scratch venv; return (name, version) pairs."""
    with tempfile.TemporaryDirectory(prefix="vidcore-lock-") as tmp:
        scratch = Path(tmp)
        venv.create(scratch / "venv", with_pip=True)
        python = str(scratch / "venv" / "bin" / "python")
        # --isolated: ignore this machine's pip configuration (extra indexes, local wheels, caps)
        pip = [python, "-m", "pip", "--isolated", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", f"pip=={pip_version}"], check=True)
        reqs = scratch / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        report = scratch / "report.json"
        subprocess.run(
            [*pip, "install", "--quiet", "--dry-run", "--ignore-installed", "--only-binary=:all:",
             "--target", str(scratch / "unused"), *platform_args(), "--report", str(report), "-r", str(reqs)],
            check=True,
        )
        data = json.loads(report.read_text())
    return sorted((normalize(item["metadata"]["name"]), item["metadata"]["version"]) for item in data["install"])


def inputs_digest(requirements: list[str], pin_only: list[str]) -> str:
    text = "\n".join(sorted(requirements) + sorted(pin_only)) + f"\npython{PYTHON_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render(pins: list[tuple[str, str]], pin_only: list[str], digest: str, pip_version: str) -> str:
    lines = [
        "# Generated by docker/lock.py from docker/requirements.in and the repository's pyproject.toml files.",
        "# Do not edit: change the inputs and run `python docker/lock.py`.",
        f"# Target: Linux x86_64 (manylinux, glibc <= 2.{MAX_GLIBC_MINOR}), CPython {PYTHON_VERSION}; "
        f"resolved by pip {pip_version}.",
        "# torch's CUDA libraries (nvidia-*, cuda-*) are omitted: each torch wheel pins its own exactly.",
        f"# inputs-sha256: {digest}",
    ]
    entries = {name: f"{name}=={version}" for name, version in pins if not VARIANT_SPECIFIC.match(name)}
    for pin in pin_only:
        entries[req_name(pin)] = f"{req_name(pin)}=={pin.split('==', 1)[1].strip()}"
    return "\n".join(lines + [entries[k] for k in sorted(entries)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--pip-version", default=PIP_VERSION)
    parser.add_argument("--check", action="store_true", help="exit 1 if the lock is out of date (no write)")
    args = parser.parse_args(argv)

    resolve_in, pin_only = read_inputs()
    pinned_names = {req_name(p) for p in pin_only}
    from_repo = [r for r in repo_requirements() if req_name(r) not in pinned_names]
    requirements = list(dict.fromkeys(resolve_in + from_repo))
    try:
        pins = resolve(requirements, args.pip_version)
    except subprocess.CalledProcessError as exc:
        print(f"pip could not resolve the inputs (exit {exc.returncode}); see its message above", file=sys.stderr)
        return 1
    text = render(pins, pin_only, inputs_digest(requirements, pin_only), args.pip_version)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run: python docker/lock.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.splitlines()) - 5} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
