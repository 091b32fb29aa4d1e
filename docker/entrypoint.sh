#!/usr/bin/env bash
# Container entrypoint: fetch the weights a command needs (resumable), then run that vidcore command.
#
#   docker run ... IMAGE                        # the image's default: vidcore serve --host 0.0.0.0
#   docker run ... IMAGE generate "a cat surfing" --backend wan2.2-t2v-a14b --out /outputs/cat.mp4
#   docker run ... IMAGE doctor
#
# Arguments are a vidcore command line (a leading "vidcore" is accepted and dropped). Before
# `generate`, `batch` and `serve`, each backend's checkpoint is brought into the Hugging Face cache (a
# volume) with `vidcore download BACKEND`: files already complete are skipped and a broken transfer
# resumes, so this is cheap on every run after the first. The backends are those given with --backend
# (serve takes several), the one recorded in --from-record RUN.json, or $VIDCORE_BACKEND (which is then
# passed on as --backend). Nothing is fetched for a backend given a --ckpt (DIR, or NAME=DIR for serve),
# when VIDCORE_AUTO_DOWNLOAD=0, when HF_HUB_OFFLINE=1, or when the backend carries its weights (the
# embedded latte-shapes demo). `serve` reads its API key from $VIDCORE_API_KEY, never from a flag here.
# For a shell, override the entrypoint: docker run --entrypoint bash ...
set -euo pipefail

log() { printf '[entrypoint] %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
  set -- doctor
fi
if [[ "$1" == vidcore ]]; then
  shift
  [[ $# -gt 0 ]] || set -- doctor
fi
command="$1"

backends=()
ckpts=()
record=""
args=("$@")
for ((i = 1; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --backend) backends+=("${args[i + 1]:-}") ;;
    --backend=*) backends+=("${args[i]#--backend=}") ;;
    --ckpt) ckpts+=("${args[i + 1]:-}") ;;
    --ckpt=*) ckpts+=("${args[i]#--ckpt=}") ;;
    --from-record) record="${args[i + 1]:-}" ;;
    --from-record=*) record="${args[i]#--from-record=}" ;;
  esac
done

# fetch_weights BACKEND: download its checkpoint if it has a hub repository (an unknown name is left for
# vidcore itself to report, with the list of installed backends)
fetch_weights() {
  local hub_repo
  hub_repo="$(python - "$1" <<'PYEOF' 2>/dev/null || true
import sys
from vidcore.plugins import get_backend
layout = get_backend(sys.argv[1]).layout
print(layout.repo_id if layout is not None and layout.repo_id else "")
PYEOF
)"
  if [[ -n "$hub_repo" ]]; then
    log "making sure the weights of $1 ($hub_repo) are in ${HF_HOME:-the Hugging Face cache}"
    vidcore download "$1" >&2
  fi
}

offline="${HF_HUB_OFFLINE:-0}"
downloads=0
if [[ "${VIDCORE_AUTO_DOWNLOAD:-1}" == 1 && ! "$offline" =~ ^(1|true|yes|on)$ ]]; then
  downloads=1
fi

if [[ "$command" == generate || "$command" == batch ]]; then
  backend="${backends[0]:-}"
  if [[ -z "$backend" && -n "$record" && -f "$record" ]]; then
    backend="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["request"]["backend"])' "$record" \
      2>/dev/null || true)"
  elif [[ -z "$backend" && -z "$record" && -n "${VIDCORE_BACKEND:-}" ]]; then
    backend="$VIDCORE_BACKEND"
    set -- "$@" --backend "$backend"
  fi
  if [[ -n "$backend" && ${#ckpts[@]} -eq 0 && "$downloads" == 1 ]]; then
    fetch_weights "$backend"
  fi
elif [[ "$command" == serve ]]; then
  if [[ ${#backends[@]} -eq 0 && -n "${VIDCORE_BACKEND:-}" ]]; then
    backends=("$VIDCORE_BACKEND")
    set -- "$@" --backend "$VIDCORE_BACKEND"
  fi
  if [[ "$downloads" == 1 ]]; then
    for backend in "${backends[@]}"; do
      given=0
      for spec in "${ckpts[@]}"; do
        if [[ "${spec%%=*}" == "$backend" ]]; then given=1; fi
      done
      [[ "$given" == 1 ]] || fetch_weights "$backend"
    done
  fi
fi

exec vidcore "$@"
