#!/usr/bin/env bash
# Container entrypoint: fetch the weights a command needs (resumable), then run that vidcore command.
#
#   docker run ... IMAGE generate "a cat surfing" --backend wan2.2-t2v-a14b --out /outputs/cat.mp4
#   docker run ... IMAGE doctor
#
# Arguments are a vidcore command line (a leading "vidcore" is accepted and dropped). Before
# `generate` and `batch`, the backend's checkpoint is brought into the Hugging Face cache (a volume) with
# `vidcore download BACKEND`: files already complete are skipped and a broken transfer resumes, so
# this is cheap on every run after the first. The backend is the one given with --backend, the one
# recorded in --from-record RUN.json, or $VIDCORE_BACKEND (which is then passed on as --backend).
# Nothing is fetched when --ckpt DIR is given, when VIDCORE_AUTO_DOWNLOAD=0, when HF_HUB_OFFLINE=1,
# or when the backend carries its weights (the embedded latte-shapes demo).
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

backend=""
ckpt=""
record=""
args=("$@")
for ((i = 1; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --backend) backend="${args[i + 1]:-}" ;;
    --backend=*) backend="${args[i]#--backend=}" ;;
    --ckpt) ckpt="${args[i + 1]:-}" ;;
    --ckpt=*) ckpt="${args[i]#--ckpt=}" ;;
    --from-record) record="${args[i + 1]:-}" ;;
    --from-record=*) record="${args[i]#--from-record=}" ;;
  esac
done

if [[ "$command" == generate || "$command" == batch ]]; then
  if [[ -z "$backend" && -n "$record" && -f "$record" ]]; then
    backend="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["request"]["backend"])' "$record" \
      2>/dev/null || true)"
  elif [[ -z "$backend" && -z "$record" && -n "${VIDCORE_BACKEND:-}" ]]; then
    backend="$VIDCORE_BACKEND"
    set -- "$@" --backend "$backend"
  fi
  offline="${HF_HUB_OFFLINE:-0}"
  if [[ -n "$backend" && -z "$ckpt" && "${VIDCORE_AUTO_DOWNLOAD:-1}" == 1 && ! "$offline" =~ ^(1|true|yes|on)$ ]]; then
    # Only backends with a hub repository have anything to fetch; an unknown name is left for
    # `vidcore generate` to report with the list of installed backends.
    hub_repo="$(python - "$backend" <<'PYEOF' 2>/dev/null || true
import sys
from vidcore.plugins import get_backend
layout = get_backend(sys.argv[1]).layout
print(layout.repo_id if layout is not None and layout.repo_id else "")
PYEOF
)"
    if [[ -n "$hub_repo" ]]; then
      log "making sure the weights of $backend ($hub_repo) are in ${HF_HOME:-the Hugging Face cache}"
      vidcore download "$backend" >&2
    fi
  fi
fi

exec vidcore "$@"
