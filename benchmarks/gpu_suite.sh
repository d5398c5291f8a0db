#!/usr/bin/env bash
# The GPU suite, one call: installs the wheels it is given, prints versions and nvidia-smi, then runs the steps
# (benchmarks/gpu_suite.py: what each measures, its time budget and the wheels it needs), appending JSON lines to
# OUT/gpu_results.jsonl as they are measured.
#
#   benchmarks/gpu_suite.sh [--wheels DIR] [--out DIR] [--call 1|2 | --steps 1,2,3] [--budget SECONDS] [--dry-run]
#
# A 15-minute window (the machine's start included) holds two calls (benchmarks/gpu_suite.py's PLAN): `--call 1`
# (steps 1, 2, 3: the GPU tests, the loaders, training; ~8 minutes) with webdataset + braceexpand + simplejpeg
# wheels, then `--call 2` (steps 5, 6: features, a small study; ~3.5 minutes) with lightgbm. XGBoost's CUDA wheel
# (~125 MiB) and DALI (~190 MiB) do not fit two calls of 64 MiB. --out defaults to $OUT (what a device call returns).
#
# --wheels DIR: every *.whl in DIR is installed into a temporary folder put on PYTHONPATH (no index, no
#   dependencies: bring each one that is missing). A wheel too big to carry in one piece arrives as NAME.whl.part-aa,
#   NAME.whl.part-ab, ... (`split -b 60m`) beside NAME.whl.sha256: the pieces are joined in name order and checked
#   against the sha256 before the install.
# The checkout runs from its own folder (PYTHONPATH=.), with the machine's own torch: no `pip install -e .`.
# --dry-run: every step on the CPU at toy size (CI runs it: tests/test_gpu_suite.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
wheels=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --wheels=*) wheels="${1#--wheels=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ -n "$wheels" ]; then
    site=$(mktemp -d /tmp/gzpipe-site-XXXXXX)
    for first in "$wheels"/*.whl.part-aa; do
        [ -e "$first" ] || continue
        whl=${first%.part-aa}
        cat "$whl".part-* > "$whl"
        if [ -f "$whl.sha256" ]; then
            want=$(cut -d' ' -f1 < "$whl.sha256")
            got=$(sha256sum "$whl" | cut -d' ' -f1)
            if [ "$want" != "$got" ]; then
                echo "gpu_suite: $whl does not match its sha256 (pieces missing or damaged); not installed" >&2
                rm -f "$whl"
            fi
        fi
    done
    shopt -s nullglob
    whls=("$wheels"/*.whl)
    if [ ${#whls[@]} -gt 0 ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${whls[@]}"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_suite: installed ${#whls[@]} wheel(s) into $site" >&2
    fi
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi || echo "gpu_suite: no nvidia-smi here" >&2
exec "$PY" benchmarks/gpu_suite.py "${args[@]}"
