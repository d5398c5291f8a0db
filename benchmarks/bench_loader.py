"""Loader benchmark: every available backend, on shards of the original 424 px JPEGs and of 256 px re-encodes,
with the notebook baseline and the decode ceiling measured in the same run (see gzpipe/bench/loader.py).

    .venv/bin/python benchmarks/bench_loader.py [--passes 5] [--image-size 224] [--batch-size 64] [--workers 2]

Uses the real 800-galaxy sample when ../shared is present, else a synthetic release. JSON rows on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SAMPLE, emit  # noqa: E402

import torch  # noqa: E402

from gzpipe.bench.loader import LoaderBenchConfig, run  # noqa: E402
from gzpipe.shard import ShardConfig, run_shard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stored", default="original,256", help="comma list of stored sizes to shard at")
    ap.add_argument("--backends", default=None, help="comma list [pil,dali, and nvjpeg on a GPU]")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gzpipe-bench-loader-"))
    try:
        if (SAMPLE / "labels_manifest_800.csv").exists():
            catalog, images, mapping = SAMPLE / "labels_manifest_800.csv", SAMPLE / "images", None
        else:
            from gzpipe.synth import SynthConfig, synth

            synth(SynthConfig(out=tmp / "synth", n=800, seed=0, workers=2))
            catalog, images, mapping = tmp / "synth/gz2_hart16.csv", tmp / "synth/images", tmp / "synth/gz2_filename_mapping.csv"
        backends = args.backends.split(",") if args.backends else (
            ["pil", "dali"] + (["nvjpeg"] if torch.cuda.is_available() else []))
        for stored in args.stored.split(","):
            resize = None if stored == "original" else int(stored)
            out = tmp / f"shards-{stored}"
            run_shard(ShardConfig(catalog=catalog, images=images, mapping=mapping, out=out, resize=resize,
                                  shard_size=100, workers=2))
            for i, be in enumerate(backends):
                rows = run(LoaderBenchConfig(str(out), be, args.image_size, args.batch_size, args.workers, args.passes,
                                             references=(i == 0)))
                for r in rows:
                    emit(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
