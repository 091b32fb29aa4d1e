#!/usr/bin/env bash
# Build the vidcore images (and optionally push them), tagged from the package versions:
#   <registry/>vidcore:<vidcore version>-<set>   for set in base wan22 hunyuan latte all
# The version is read from pyproject.toml; each plugin's version goes into the image's labels.
# The base image is built first; every plugin image is built FROM it (Dockerfile target "app"), so
# flash-attn and torch are built and downloaded once.
#
#   docker/build.sh                         # all images, local only
#   docker/build.sh --sets "wan22"          # base + wan22
#   docker/build.sh --registry ghcr.io/acme --push
#   docker/build.sh --dry-run               # print the commands and tags, build nothing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY=""
PUSH=0
DRY_RUN=0
SETS="wan22 hunyuan latte all"
EXTRA=()

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "options: --registry REG  --push  --sets \"LIST\"  --dry-run  -- [extra docker build arguments]"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --registry) REGISTRY="${2%/}/"; shift 2 ;;
    --push) PUSH=1; shift ;;
    --sets) SETS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage >&2; echo "unknown option $1" >&2; exit 2 ;;
  esac
done

version_of() {  # version_of PYPROJECT -> project.version
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$1"
}
CORE_VERSION="$(version_of "$ROOT/pyproject.toml")"
declare -A PLUGIN_VERSION=()
for pp in "$ROOT"/plugins/vidcore_*/pyproject.toml; do
  name="$(basename "$(dirname "$pp")")"
  PLUGIN_VERSION[${name#vidcore_}]="$(version_of "$pp")"
done

for set in $SETS; do
  if [[ "$set" != all && -z "${PLUGIN_VERSION[$set]:-}" ]]; then
    echo "unknown plugin set '$set'; choose from: all ${!PLUGIN_VERSION[*]}" >&2
    exit 2
  fi
done

run() {
  printf '+ %s\n' "$*"
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

image() { echo "${REGISTRY}vidcore:${CORE_VERSION}-$1"; }

labels_for() {  # labels_for SET -> --label arguments naming the plugin versions inside
  local names
  if [[ "$1" == all ]]; then names="${!PLUGIN_VERSION[*]}"; else names="$1"; fi
  for n in $names; do printf -- '--label\nio.vidcore.plugin.%s.version=%s\n' "$n" "${PLUGIN_VERSION[$n]}"; done
}

export DOCKER_BUILDKIT=1
built=()
run docker build --file "$ROOT/docker/Dockerfile" --target base \
  --build-arg "VIDCORE_VERSION=$CORE_VERSION" --tag "$(image base)" "${EXTRA[@]}" "$ROOT"
built+=("$(image base)")
for set in $SETS; do
  mapfile -t labels < <(labels_for "$set")
  run docker build --file "$ROOT/docker/Dockerfile" --target app \
    --build-arg "VIDCORE_VERSION=$CORE_VERSION" --build-arg "PLUGINS=$set" "${labels[@]}" \
    --tag "$(image "$set")" "${EXTRA[@]}" "$ROOT"
  built+=("$(image "$set")")
done

if [[ "$PUSH" == 1 ]]; then
  [[ -n "$REGISTRY" ]] || { echo "--push needs --registry REG" >&2; exit 2; }
  for tag in "${built[@]}"; do run docker push "$tag"; done
fi
printf 'image: %s\n' "${built[@]}"
