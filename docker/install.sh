#!/usr/bin/env bash
# Install vidcore and a set of its plugins into a virtual environment, pinned by docker/constraints.txt.
#
# This is the images' install step (docker/Dockerfile runs it), and CI runs the very same script in a
# plain virtual environment (.ci/static_checks.sh, with --torch installed and the CPU build of torch),
# so a wrong package name, a missing extra or an unpinned dependency fails CI although no Docker engine
# runs there. Our own packages are always built from the checkout (they are not on PyPI); everything
# else comes from the package index at the versions the lock names.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV=/opt/vidcore/venv
PYTHON=""
REPO="$(dirname "$HERE")"
PLUGINS=all
EXTRAS_WANTED=serve,postgres
TORCH_MODE=index
TORCH_VARIANT=cu126
TORCH_INDEX=""
FLASH_WHEELS=""
BUILD_FLASH_OUT=""
TORCH_ONLY=0
CONSTRAINTS="$HERE/constraints.txt"
# flash-attn 2.x compiles sm_80 and sm_90 kernels: sm_80 code runs on every 8.x GPU (8.9: L4, L40S),
# sm_90 is Hopper (H100, H200). It has no separate sm_89 target.
FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS:-80;90}"

usage() {
  cat <<'EOF'
usage: docker/install.sh [options]
  --venv DIR             virtual environment to install into; created if missing [/opt/vidcore/venv]
  --python EXE           interpreter that creates the venv [python3.11, else python3]
  --repo DIR             vidcore checkout to build our packages from [this script's repository]
  --plugins SET          none | all | comma list of plugin names (wan22,hunyuan,latte) [all]
  --extras LIST          more extras of vidcore, comma-separated, or none [serve,postgres: vidcore serve]
  --torch MODE           index: install torch==<lock pin>+<variant> from the PyTorch index;
                         installed: keep the torch already in the venv (must be the lock's release) [index]
  --torch-variant V      PyTorch build for --torch index: cu126, cu130, cpu, ... [cu126]
  --torch-index URL      package index for --torch index [https://download.pytorch.org/whl/<variant>]
  --flash-wheels DIR     also install vidcore[flash] using the flash-attn wheel in DIR
  --build-flash-attn OUT build the pinned flash-attn wheel into OUT instead of installing vidcore
  --torch-only           install the packaging tools and torch, then stop (a cacheable image layer)
  --constraints FILE     the lock [docker/constraints.txt]
EOF
}

log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --plugins) PLUGINS="$2"; shift 2 ;;
    --extras) EXTRAS_WANTED="$2"; shift 2 ;;
    --torch) TORCH_MODE="$2"; shift 2 ;;
    --torch-variant) TORCH_VARIANT="$2"; shift 2 ;;
    --torch-index) TORCH_INDEX="$2"; shift 2 ;;
    --flash-wheels) FLASH_WHEELS="$2"; shift 2 ;;
    --build-flash-attn) BUILD_FLASH_OUT="$2"; shift 2 ;;
    --torch-only) TORCH_ONLY=1; shift ;;
    --constraints) CONSTRAINTS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

case "$TORCH_MODE" in index|installed) ;; *) die "--torch must be 'index' or 'installed', not '$TORCH_MODE'" ;; esac
[[ -f "$CONSTRAINTS" ]] || die "lock file $CONSTRAINTS not found; run: python docker/lock.py"
[[ -z "$FLASH_WHEELS" || -d "$FLASH_WHEELS" ]] || die "--flash-wheels $FLASH_WHEELS is not a folder"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/$TORCH_VARIANT}"

pinned() {  # pinned NAME -> the version the lock names, or nothing
  sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"
}
TORCH_VERSION="$(pinned torch)"
[[ -n "$TORCH_VERSION" ]] || die "the lock pins no torch version; run: python docker/lock.py"

# --- the virtual environment, with pinned packaging tools -----------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  if [[ -z "$PYTHON" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
    [[ -n "$PYTHON" ]] || die "no python3 found; pass --python EXE"
  fi
  log "creating virtual environment $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || die "$VENV needs Python >= 3.11 (the lock targets 3.11)"
PIP=("$PY" -m pip --disable-pip-version-check)
log "pinned packaging tools (pip, setuptools, wheel)"
"${PIP[@]}" install --quiet -c "$CONSTRAINTS" pip setuptools wheel

install_torch() {
  if [[ "$TORCH_MODE" == installed ]]; then
    local have
    have="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
      || die "--torch installed, but torch does not import in $VENV; install torch==$TORCH_VERSION first"
    [[ "${have%%+*}" == "$TORCH_VERSION" ]] \
      || die "--torch installed: $VENV has torch $have, the lock pins $TORCH_VERSION"
    log "using the installed torch $have"
  else
    log "torch==$TORCH_VERSION+$TORCH_VARIANT from $TORCH_INDEX"
    "${PIP[@]}" install --quiet -c "$CONSTRAINTS" --extra-index-url "$TORCH_INDEX" \
      "torch==$TORCH_VERSION+$TORCH_VARIANT"
  fi
}

# --- builder mode: the flash-attn wheel --------------------------------------------------------------
if [[ -n "$BUILD_FLASH_OUT" ]]; then
  FLASH_VERSION="$(pinned flash-attn)"
  [[ -n "$FLASH_VERSION" ]] || die "the lock pins no flash-attn version"
  install_torch
  "${PIP[@]}" install --quiet -c "$CONSTRAINTS" packaging psutil ninja einops
  mkdir -p "$BUILD_FLASH_OUT"
  log "building flash-attn==$FLASH_VERSION for CUDA archs $FLASH_ATTN_CUDA_ARCHS (MAX_JOBS=${MAX_JOBS:-auto})"
  FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS="$FLASH_ATTN_CUDA_ARCHS" \
    TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.9;9.0}" \
    "${PIP[@]}" wheel --no-deps --no-build-isolation -c "$CONSTRAINTS" -w "$BUILD_FLASH_OUT" \
    "flash-attn==$FLASH_VERSION"
  ls -l "$BUILD_FLASH_OUT"
  exit 0
fi

if [[ "$TORCH_ONLY" == 1 ]]; then
  install_torch
  exit 0
fi

# --- which packages: extras and plugin folders, checked against the pyproject files ----------------
# Prints "EXTRAS<TAB>plugin dirs<TAB>dist==version ..." or fails with a one-line reason.
[[ -f "$REPO/pyproject.toml" ]] || die "$REPO is not a vidcore checkout (no pyproject.toml); pass --repo DIR"
plan="$("$PY" -I - "$REPO" "$PLUGINS" "${FLASH_WHEELS:+flash}" "$EXTRAS_WANTED" <<'PYEOF'
import re, sys, tomllib
from pathlib import Path

repo, wanted, flash, more = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
core = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
extras = core.get("optional-dependencies", {})
plugins = {}  # short name (folder vidcore_<x>) -> (folder, dist name, version)
for pp in sorted((repo / "plugins").glob("vidcore_*/pyproject.toml")):
    proj = tomllib.loads(pp.read_text())["project"]
    plugins[pp.parent.name.removeprefix("vidcore_")] = (pp.parent, norm(proj["name"]), proj["version"])

if wanted == "none":
    chosen, names = [], []
elif wanted == "all":
    chosen, names = sorted(plugins), ["all"]
else:
    chosen = names = [w.strip() for w in wanted.split(",") if w.strip()]
for name in chosen:
    if name not in plugins:
        sys.exit(f"unknown plugin {name!r}; this checkout has: {', '.join(sorted(plugins))}")
if flash:
    names = names + ["flash"]
if more != "none":
    names = names + [e.strip() for e in more.split(",") if e.strip()]
by_dist = {dist: (short, version) for short, (_, dist, version) in plugins.items()}
for extra in names:
    if extra not in extras:
        sys.exit(f"vidcore has no extra {extra!r} (pyproject.toml offers: {', '.join(sorted(extras))})")
    for req in extras[extra]:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s;,]+))?", req)
        dist, pin = norm(m.group(1)), m.group(2)
        if dist.startswith("vidcore"):
            if dist not in by_dist:
                sys.exit(f"extra {extra!r} requires {dist}, which no plugins/*/pyproject.toml names")
            if pin and pin != by_dist[dist][1]:
                sys.exit(f"extra {extra!r} pins {dist}=={pin} but plugins/ has version {by_dist[dist][1]}")
expect = [f"{norm(core['name'])}=={core['version']}"]
expect += [f"{plugins[c][1]}=={plugins[c][2]}" for c in chosen]
print(",".join(names), " ".join(str(plugins[c][0]) for c in chosen), " ".join(expect), sep="\t")
PYEOF
)" || die "the requested plugin set does not match the pyproject files (see above)"
IFS=$'\t' read -r EXTRAS PLUGIN_DIRS EXPECT <<<"$plan"
log "plugins: ${PLUGINS}; extras: [${EXTRAS}]; expecting: ${EXPECT}"

install_torch

# --- build our wheels from a clean copy of the sources (the checkout stays untouched) -------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
copy_source() {  # copy_source SRC DST: a package folder without build debris
  mkdir -p "$2"
  tar -C "$1" --exclude='__pycache__' --exclude='*.egg-info' --exclude='./build' --exclude='./dist' \
    --exclude='./tests' --exclude='.venv*' -cf - . | tar -C "$2" -xf -
}
mkdir -p "$WORK/src" "$WORK/wheels"
for f in pyproject.toml README.md LICENSE; do
  [[ -f "$REPO/$f" ]] && cp "$REPO/$f" "$WORK/src/"
done
copy_source "$REPO/vidcore" "$WORK/src/vidcore"
sources=("$WORK/src")
for dir in $PLUGIN_DIRS; do
  copy_source "$dir" "$WORK/plugins/$(basename "$dir")"
  sources+=("$WORK/plugins/$(basename "$dir")")
done
log "building wheels: vidcore ${PLUGIN_DIRS:+and $(for d in $PLUGIN_DIRS; do basename "$d"; done | tr '\n' ' ')}"
"${PIP[@]}" wheel --quiet --no-deps --no-build-isolation -w "$WORK/wheels" "${sources[@]}"

core_wheel=("$WORK"/wheels/vidcore-*.whl)
core_wheel="${core_wheel[0]}"
targets=("$core_wheel${EXTRAS:+[$EXTRAS]}")
for w in "$WORK"/wheels/*.whl; do [[ "$w" == "$core_wheel" ]] || targets+=("$w"); done
if [[ -n "$FLASH_WHEELS" ]]; then
  found=("$FLASH_WHEELS"/flash_attn-*.whl)
  [[ -f "${found[0]}" ]] || die "no flash_attn-*.whl in $FLASH_WHEELS"
  targets+=("${found[0]}")
fi
log "pip install -c $(basename "$CONSTRAINTS") ${targets[*]##*/}"
"${PIP[@]}" install --quiet -c "$CONSTRAINTS" "${targets[@]}"

# --- verify: the right distributions, from this venv, loading as plugins ---------------------------
log "verifying the installation"
"${PIP[@]}" check
"$PY" -I - "$EXPECT" <<'PYEOF'
import importlib.metadata as md, json, os, subprocess, sys
from pathlib import Path

prefix = Path(sys.prefix).resolve()
entry_points = []
for item in sys.argv[1].split():
    name, version = item.split("==")
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"{name} is not installed")
    if dist.version != version:
        sys.exit(f"{name} is {dist.version}, expected {version}")
    where = Path(dist.locate_file("")).resolve()
    if prefix not in (where, *where.parents):
        sys.exit(f"{name} resolves to {where}, outside the venv {prefix}")
    entry_points += [ep.name for ep in dist.entry_points if ep.group == "vidcore"]
vidcore = str(Path(sys.prefix) / "bin" / "vidcore")
env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU at build time; never touch one
doctor = json.loads(subprocess.run([vidcore, "doctor", "--json"], check=True, capture_output=True, text=True,
                                   env=env).stdout)
broken = [p for p in doctor["plugins"] if not p["ok"]]
if broken:
    sys.exit(f"broken plugins: {broken}")
loaded = sorted(p["name"] for p in doctor["plugins"])
missing = sorted(set(entry_points) - set(loaded))
if missing:
    sys.exit(f"plugins installed but not loaded by vidcore: {missing}")
listed = json.loads(subprocess.run([vidcore, "backends", "--json"], check=True, capture_output=True, text=True,
                                   env=env).stdout)
names = [b["name"] for b in listed["backends"]]
print(f"[install] ok: torch {doctor['torch']}, flash-attn {doctor['flash_attn']}, plugins {loaded}, "
      f"backends {names}")
PYEOF
