"""How each stage's cost grows with the number of galaxies, up to the full GZ2 release (239,695 rows).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,50000] [--workdir DIR] [--keep]
    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,50000,239695      # the full release size too

Builds a full-size stand-in release (``benchmarks/standin.py``: 231 Hart16 columns, the release's mapping and
image counts, hard links to the real sample's JPEGs) for the largest size, then for each size N runs every stage
that can run on this machine as a `gzpipe` command in its own process, measuring wall time and the peak RSS of the
stage's main process:

  catalog (read + join) | shard (pass-through, --verify decode and header) beside `tar cf` of the same files, alone
  and followed by a sync of its output (medians of --shard-repeats interleaved runs) |
  shard --resize 256 (on up to --resize-rows galaxies) | verify | loader (time to first batch, steady images/s) |
  features (32 px) | boost, both engines (seconds per round at N train rows) | ensemble | report | predict (test
  split of the shard folder)

and fits the growth exponent k of each stage (cost ~ N^k) over the sizes. Prints JSON rows; cleans up what it
wrote unless --keep. Features need a trained checkpoint: a resnet50 trained for one epoch on 256 galaxies at 32 px
(its accuracy is beside the point; its cost per image is not).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SAMPLE, emit, machine  # noqa: E402

ENV = {**os.environ, "GZPIPE_PROGRESS": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
ENV = {k: v for k, v in ENV.items() if v != ""}


def measure(cmd: list[str]) -> None:
    """Run a set-up step (not measured)."""
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")


# A child's peak RSS starts at its parent's RSS at fork (Linux carries the forked memory's high-water mark across
# exec), so each stage is started by this small launcher, whose own RSS is a few MB, and the launcher reports its
# child's peak from wait4.
LAUNCH = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.write("\\n@@peak_rss_kb %d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_rss(cmd: list[str]) -> dict:
    """Run ``cmd``: its wall time and the peak RSS of its own process in MB (from wait4: no sampling to miss)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, cmd)], env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    err, _, tail = r.stderr.rpartition("@@peak_rss_kb ")
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(int(tail.split()[0]) / 1024, 1), "stdout": r.stdout,
            "stderr": err}


def gz(*args) -> list[str]:
    return [sys.executable, "-m", "gzpipe", *map(str, args)]


def py(code: str, *args) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


CATALOG = """
import sys
from pathlib import Path
from gzpipe.catalog import CatalogSource, read_catalog
t = read_catalog(CatalogSource(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
print(len(t), int((t["reject"] != "").sum()))
"""

LOADER = """
import json, sys, time
from gzpipe.loaders import create_loader
t0 = time.perf_counter()
loader = create_loader(sys.argv[1], "train", "pil", 64, 64, train=True, device="cpu", workers=2)
it = iter(loader)
next(it)
first = time.perf_counter() - t0
n, t1 = 0, time.perf_counter()
for b in it:
    n += len(b)
    if n >= int(sys.argv[2]):
        break
print(json.dumps({"first_batch_s": first, "images_per_s": n / (time.perf_counter() - t1), "images": n}))
"""

BOOST_ROWS = """
import json, sys
import numpy as np
import pyarrow.parquet as pq
print(json.dumps({s: pq.ParquetFile(f"{sys.argv[1]}/{s}.parquet").metadata.num_rows for s in ("train", "val", "test")}))
"""

FAKE_MEMBERS = """
import sys
from pathlib import Path
import numpy as np
from gzpipe import runs, schema
from gzpipe.labels import split_labels
out, shards = Path(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
for i, b in enumerate(("efficientnet_v2_s", "regnety_8gf", "convnext_base")):  # the real resnet50 run stays
    d = out / b
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text('{"shards": "%s", "backbone": "%s"}' % (shards, b))
    for split in ("val", "test"):
        lab = split_labels(shards, split)
        y = lab[list(schema.TARGET_NAMES)].to_numpy()
        runs.write_predictions(d, split, list(lab.index), np.clip(y + rng.normal(0, 0.05 + 0.02 * i, y.shape), 0, 1))
    from gzpipe.metrics import compute_metrics
    lab = split_labels(shards, "test")
    p = runs.read_predictions(d, "test").loc[lab.index].to_numpy()
    m = compute_metrics(p, lab[list(schema.TARGET_NAMES)].to_numpy(), lab[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy())
    import json
    (d / "metrics.json").write_text(json.dumps({"test": m, "val": m, "history": [], "wall_time_s": 1.0}))
    runs.mark_complete(d, runs.BACKBONE, "stand-in member")
"""


def fit_exponent(ns: list[int], values: list[float]) -> float | None:
    pts = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sxx, 3) if sxx else None


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its own peak RSS), with every run's seconds beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000", help="comma list of catalogue row counts [10000,50000]; the "
                                                           "release has 239695")
    ap.add_argument("--workdir", type=Path, default=None, help="where to build (needs ~1.2 GB per 50k rows)")
    ap.add_argument("--keep", action="store_true", help="leave the work folder in place")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resize-rows", type=int, default=10_000, help="galaxies re-encoded by the --resize stage")
    ap.add_argument("--loader-images", type=int, default=6400, help="images timed by the loader stage")
    ap.add_argument("--boost-rounds", type=int, default=10, help="extra rounds that time one round: each booster "
                                                                 "is fit for 2 and for 2 + this many rounds")
    ap.add_argument("--boost-settings", default="full", help="comma list: full (the full preset), full-old (max_bin "
                                                              "256 on all features, the preset before; slow) [full]")
    ap.add_argument("--features-max", type=int, default=60_000, help="largest N at which features, boost and "
                                                                     "predict run (they take minutes per 10k here)")
    ap.add_argument("--stages", default="all", help="comma list of stages to run [all]")
    ap.add_argument("--shard-repeats", type=int, default=3, help="timed runs of shard and tar per size (medians) [3]")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    stages = None if args.stages == "all" else set(args.stages.split(","))
    want = (lambda s: stages is None or s in stages)
    root = Path(tempfile.mkdtemp(prefix="gzpipe-scale-", dir=args.workdir))
    results: dict[str, dict[int, dict]] = {}

    def record(stage: str, n: int, row: dict) -> None:
        row = {"stage": stage, "rows": n, **{k: v for k, v in row.items() if k not in ("stdout", "stderr")}}
        results.setdefault(stage, {})[n] = row
        emit(row)

    try:
        import standin

        t = time.perf_counter()
        rel = standin.build(root / "release", max(sizes), SAMPLE if SAMPLE.exists() else None)
        emit({"stage": "build stand-in", "rows": max(sizes), "seconds": round(time.perf_counter() - t, 1),
              **{k: (str(v) if isinstance(v, Path) else v) for k, v in rel.items()}, "machine": machine()})
        ckpt_art = root / "ckpt"
        for n in sizes:
            d = root / f"n{n}"
            d.mkdir()
            cat = d / "gz2_hart16.csv"
            if n == max(sizes):
                cat = rel["catalog"]
            else:
                import pandas as pd

                pd.read_csv(rel["catalog"], nrows=n, dtype=str, keep_default_na=False).to_csv(cat, index=False)
            base = ["--catalog", cat, "--mapping", rel["mapping"], "--images", rel["images"]]
            if want("catalog"):
                record("catalog", n, run_rss(py(CATALOG, cat, rel["images"], rel["mapping"])))
            shards = d / "shards"
            if want("shard"):
                # Interleaved repeats, medians; `sync` before each timed command so that none pays for the dirty
                # pages of the one before. gzpipe's shards are durable (one syncfs at the end), tar's output is not:
                # tar is timed alone and with a sync of its output.
                files = d / "files.txt"
                runs: dict[str, list[dict]] = {}

                def shard_run(label: str, extra: list, dest: Path) -> None:
                    shutil.rmtree(dest, ignore_errors=True)
                    os.sync()
                    runs.setdefault(label, []).append(
                        run_rss(gz("shard", *base, "--out", dest, "--workers", args.workers, *extra)))
                    if not files.exists():  # the files tar packs: those the first shard run wrote
                        m = json.loads((shards / "manifest.json").read_text())
                        files.write_text("\n".join(f"{s_id}.jpg" for s_id in _written_assets(m)) + "\n")

                def tar_run(label: str, sync: bool) -> None:
                    tar = ["tar", "--hard-dereference", "-cf", str(d / "plain.tar"), "-C", str(rel["images"]), "-T",
                           str(files)]
                    cmd = ["sh", "-c", shlex.join(tar) + " && sync -f " + shlex.quote(str(d / "plain.tar"))] if sync \
                        else tar
                    os.sync()
                    runs.setdefault(label, []).append(run_rss(cmd))
                    (d / "plain.tar").unlink()

                commands = [lambda: shard_run("shard", [], shards),
                            lambda: shard_run("shard --verify header", ["--verify", "header"], d / "shards_h"),
                            lambda: tar_run("tar cf", False), lambda: tar_run("tar cf + sync", True)]
                for rep in range(args.shard_repeats):
                    # each repeat starts one command later (with 4 repeats every command runs once in each
                    # position): the page cache a command finds depends on what ran before it
                    for k in range(len(commands)):
                        commands[(k + rep) % len(commands)]()
                shutil.rmtree(d / "shards_h")
                med = {label: _median_run(rs) for label, rs in runs.items()}
                m = json.loads((shards / "manifest.json").read_text())
                record("tar cf", n, med["tar cf"])
                record("tar cf + sync", n, med["tar cf + sync"])
                for label in ("shard", "shard --verify header"):
                    record(label, n, {**med[label], "written": m["counts"]["written"],
                                      "rejected": m["counts"]["rejected"],
                                      "vs_tar": round(med[label]["seconds"] / med["tar cf"]["seconds"], 2),
                                      "vs_tar_sync": round(med[label]["seconds"] / med["tar cf + sync"]["seconds"], 2)})
            if want("resize") and want("shard"):
                frac = min(1.0, args.resize_rows / n)
                r = run_rss(gz("shard", *base, "--out", d / "shards_r", "--workers", args.workers, "--resize", 256,
                               "--fraction", frac))
                m = json.loads((d / "shards_r/manifest.json").read_text())
                record("shard --resize 256", n, {**r, "galaxies": m["counts"]["inputs"],
                                                 "images_per_s": round(m["counts"]["inputs"] / r["seconds"], 1)})
                shutil.rmtree(d / "shards_r")
            if not shards.exists():
                continue
            if want("verify"):
                record("verify", n, run_rss(gz("verify", shards)))
            if want("loader"):
                r = run_rss(py(LOADER, shards, args.loader_images))
                record("loader", n, {**r, **json.loads(r["stdout"].strip().splitlines()[-1])})
            if n > args.features_max:
                continue
            if not (ckpt_art / "resnet50/training_complete.txt").exists():
                tiny = root / "tiny_shards"
                measure(gz("shard", *base, "--out", tiny, "--fraction", min(1.0, 320 / n), "--resize", 64,
                           "--shard-size", 64, "--workers", args.workers))
                measure(gz("train", "--backbone", "resnet50", "--shards", tiny, "--out", ckpt_art, "--epochs", 1,
                           "--image-size", 32, "--batch-size", 16, "--workers", 1, "--device", "cpu", "--backend",
                           "pil", "--warmup-epochs", 0))
            art = d / "art"
            (art / "resnet50").mkdir(parents=True)
            shutil.copytree(ckpt_art / "resnet50/checkpoints", art / "resnet50/checkpoints")
            for f in ("metrics.json", "training_complete.txt"):  # a finished run: predict refuses unfinished ones
                shutil.copy(ckpt_art / "resnet50" / f, art / "resnet50" / f)
            cfg = json.loads((ckpt_art / "resnet50/config.json").read_text())
            (art / "resnet50/config.json").write_text(json.dumps({**cfg, "shards": str(shards)}))
            if want("features"):
                record("features", n, run_rss(gz("features", "--backbone", "resnet50", "--out", art, "--shards",
                                                  shards, "--workers", args.workers, "--batch-size", 256)))
                rows = json.loads(run_rss(py(BOOST_ROWS, art / "resnet50/features"))["stdout"])
                if want("boost"):
                    for engine in ("xgboost", "lightgbm"):
                        for label, opts in _boost_settings(args.boost_settings.split(","), engine):
                            fits = []
                            for rounds in (2, 2 + args.boost_rounds):
                                r = run_rss(gz("boost", "--engine", engine, "--backbone", "resnet50", "--out", art,
                                               "--rounds", rounds, "--early-stopping", rounds, "--device", "cpu",
                                               "--force", *opts))
                                met = json.loads((art / f"{engine}_resnet50/metrics.json").read_text())
                                fits.append((r, met["train_time_s"]))
                            per_round = (fits[1][1] - fits[0][1]) / args.boost_rounds
                            record(f"boost {engine} ({label})", n, {
                                **fits[1][0], "train_rows": rows["train"],
                                "seconds_per_round": round(per_round, 3),
                                "set_up_s": round(fits[0][1] - 2 * per_round, 2),
                                "train_time_s": round(fits[1][1], 2), "rounds": 2 + args.boost_rounds})
            if want("ensemble"):
                measure(py(FAKE_MEMBERS, art, shards))
                record("ensemble", n, run_rss(gz("ensemble", "--method", "inverse_mae", "--out", art, "--backbones",
                                                  "efficientnet_v2_s,regnety_8gf,convnext_base")))
                record("report", n, run_rss(gz("report", "--out", art)))
            if want("predict"):
                tests = [shards / s["name"] for s in json.loads((shards / "manifest.json").read_text())["shards"]
                         if s["split"] == "test"]
                r = run_rss(gz("predict", "--model", art / "resnet50", *tests, "--out", d / "pred.parquet",
                               "--workers", args.workers, "--batch-size", 256))
                record("predict", n, {**r, "images": _predicted(d / "pred.parquet")})
            if not args.keep:
                shutil.rmtree(art, ignore_errors=True)
                shutil.rmtree(shards, ignore_errors=True)
        for stage, by_n in results.items():
            ns = sorted(by_n)
            key = "train_time_s" if stage.startswith("boost") else "seconds"  # a difference of two fits is noisy
            emit({"stage": stage, "growth_exponent_time": fit_exponent(ns, [by_n[k].get(key) for k in ns]),
                  "growth_exponent_rss": fit_exponent(ns, [by_n[k].get("peak_rss_mb") for k in ns]),
                  "sizes": ns, "machine": machine()})
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _written_assets(manifest: dict) -> list[str]:
    rejected = {r["id"] for r in manifest["rejected"]}
    import pandas as pd

    lab = pd.read_parquet(Path(manifest["config"]["out"]) / "labels.parquet", columns=["id"])
    return [i for i in lab["id"] if i not in rejected]


def _predicted(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _boost_settings(names: list[str], engine: str) -> list[tuple[str, list[str]]]:
    """``engine``'s options in the `full` preset (gzpipe/study/config.py: the shared keys, then the engine's own)
    and, as ``full-old``, the preset before they were measured (max_bin 256, colsample 0.5, all features)."""
    from gzpipe.boost import split_boost_section
    from gzpipe.study.config import PRESETS

    common, params = split_boost_section(PRESETS["full"]["boost"], engine_name=engine)
    settings = {"full": {**common, **params}, "full-old": {"max_bin": 256, "colsample": 0.5}}
    out = []
    for name in names:
        opts = []
        for k, v in settings[name].items():
            if k in ("rounds", "early_stopping") or v is None:  # fixed rounds here; None: the option left out
                continue
            opts += [f"--{k.replace('_', '-')}", str(v)] if k in ("max_bin", "colsample", "learning_rate", "pca",
                                                                  "subsample") else ["--param", f"{k}={v}"]
        out.append((f"{name} preset" if name == "full" else name, opts))
    return out


if __name__ == "__main__":
    main()
