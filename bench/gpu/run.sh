#!/usr/bin/env bash
# The GPU acceptance run (bench/gpu/README.md): carried wheels onto PYTHONPATH, then every stage, results in $OUT.
set -u; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; exec python3 bench/gpu/acceptance.py --out "${OUT:-acceptance-out}" --work /tmp/acceptance-work "$@"
