"""Synth benchmark: galaxies/s rendered, voted and written as JPEG + CSV on one core (goal: >= 50/s).

    .venv/bin/python benchmarks/bench_synth.py [--n 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, timed  # noqa: E402

from gzpipe.synth import SynthConfig, synth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gzpipe-bench-synth-"))
    try:
        for workers in (1, 2):
            def run():
                shutil.rmtree(tmp / "s", ignore_errors=True)
                synth(SynthConfig(out=tmp / "s", n=args.n, seed=0, workers=workers))

            t, times = timed(run, args.repeats)
            emit({"machine": machine(), "galaxies": args.n, "workers": workers, "galaxies_per_s": round(args.n / t, 1),
                  "passes": [round(args.n / x, 1) for x in times]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
