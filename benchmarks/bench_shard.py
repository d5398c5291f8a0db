"""Shard benchmark: images/s for pass-through and --resize 256 with 1 and 2 workers, against plain `tar cf`.

    .venv/bin/python benchmarks/bench_shard.py [--repeats 3]

Uses the real 800-galaxy sample (../shared/data/gz2_sample) when present, else a synthetic release.
Prints one JSON object per line; medians over --repeats timed runs after one warm-up (page cache warm).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SAMPLE, emit, machine, timed  # noqa: E402

from gzpipe.shard import ShardConfig, run_shard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gzpipe-bench-"))
    try:
        if (SAMPLE / "labels_manifest_800.csv").exists():
            catalog, images, mapping, data = SAMPLE / "labels_manifest_800.csv", SAMPLE / "images", None, "gz2_sample (real, 800)"
        else:
            from gzpipe.synth import SynthConfig, synth

            synth(SynthConfig(out=tmp / "synth", n=800, seed=0, workers=2))
            catalog, images, mapping, data = (tmp / "synth/gz2_hart16.csv", tmp / "synth/images",
                                              tmp / "synth/gz2_filename_mapping.csv", "synthetic (800)")
        files = sorted(p.name for p in images.glob("*.jpg"))
        n = len(files)
        base = {"machine": machine(), "data": data, "images": n, "repeats": args.repeats}

        def tar_cf():
            subprocess.run(["tar", "cf", str(tmp / "plain.tar"), "-C", str(images), *files], check=True)

        t_tar, _ = timed(tar_cf, args.repeats)
        emit({**base, "mode": "plain tar cf", "workers": 1, "images_per_s": round(n / t_tar, 1), "seconds": round(t_tar, 3)})
        for resize in (None, 256):
            for workers in (1, 2):
                out = tmp / f"out-{resize}-{workers}"

                def run():
                    shutil.rmtree(out, ignore_errors=True)  # no reuse of finished shards: a full pack each time
                    run_shard(ShardConfig(catalog=catalog, images=images, mapping=mapping, out=out,
                                          resize=resize, shard_size=args.shard_size, workers=workers))

                t, _ = timed(run, args.repeats)
                emit({**base, "mode": "pass-through (verify=decode)" if resize is None else f"resize {resize}",
                      "workers": workers, "images_per_s": round(n / t, 1), "seconds": round(t, 3),
                      "vs_tar": round(t / t_tar, 2)})
        for workers in (1, 2):
            out = tmp / f"out-h-{workers}"

            def run_h():
                shutil.rmtree(out, ignore_errors=True)
                run_shard(ShardConfig(catalog=catalog, images=images, mapping=mapping, out=out, verify="header",
                                      shard_size=args.shard_size, workers=workers))

            t, _ = timed(run_h, args.repeats)
            emit({**base, "mode": "pass-through (verify=header)", "workers": workers, "images_per_s": round(n / t, 1),
                  "seconds": round(t, 3), "vs_tar": round(t / t_tar, 2)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
