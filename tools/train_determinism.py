#!/usr/bin/env python3
"""Run the same `gzpipe train` command several times, each in a fresh process, and say where runs part.

    python tools/train_determinism.py --runs 40 -- --backbone resnet50 --shards SHARDS --out TMP --epochs 1 ...

Each run is hooked to hash, in order: every train batch (images, targets, mask), every step's loss, the gradients
after clipping, and the parameters after each of the first optimizer steps. Runs are compared with the first; for
one that differs, the first batch, step and parameter (by name) that differ are printed. Resumed-against-
uninterrupted tests (tests/reliability) compare trainings to 1e-6: this tells whether two uninterrupted runs agree
at all (tests/reliability/README.md, "not the resume but training itself"). The run folder (--out) is removed
before each run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS_HASHED = 2  # optimizer steps whose gradients and resulting parameters are hashed (the rest: the loss only)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="how many runs [20]")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: run once, hooked, log here
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="`gzpipe train`'s arguments, after --")
    return ap


def _digest(t) -> str:
    return hashlib.md5(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:12]


def _child(log_path: Path, train_args: list[str]) -> None:
    """One hooked run: the hooks only read, so the run is the one the command would make."""
    import atexit

    import torch

    import gzpipe.loaders.create as create
    import gzpipe.train.loop as loop

    log: dict = {"batches": [], "loss": [], "grads": [], "params": [], "names": []}
    plain_iter, plain_loss, plain_step = create.Loader.__iter__, loop.masked_loss, torch.optim.AdamW.step

    def batches(self):
        for b in plain_iter(self):
            if self.train:
                log["batches"].append(_digest(b.images) + _digest(b.targets) + _digest(b.mask.to(torch.uint8)))
            yield b

    def loss(*a, **k):
        out = plain_loss(*a, **k)
        log["loss"].append(float(out[0]))
        return out

    def step(self, *a, **k):
        params = [p for g in self.param_groups for p in g["params"]]
        hashed = len(log["params"]) < STEPS_HASHED
        if hashed:
            log["grads"].append([_digest(p.grad) if p.grad is not None else "" for p in params])
        out = plain_step(self, *a, **k)
        if hashed:
            log["params"].append([_digest(p) for p in params])
        return out

    def named(model):  # the parameters' names, in the optimizer's order (gzpipe passes net.parameters())
        log["names"] = [n for n, _ in model.named_parameters()]

    create.Loader.__iter__, loop.masked_loss, torch.optim.AdamW.step = batches, loss, step
    import gzpipe.train.run as run

    plain_logits = run.LogitsModel.__init__

    def logits_init(self, model, *a, **k):
        plain_logits(self, model, *a, **k)
        named(self)

    run.LogitsModel.__init__ = logits_init
    atexit.register(lambda: log_path.write_text(json.dumps(log)))
    from gzpipe.cli import main

    main(["train", *train_args])


def _first(a: list, b: list):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def where_they_part(ref: dict, run: dict) -> str | None:
    """None when ``run`` matches ``ref``; else the first batch, step and parameter that differ."""
    if run == ref:
        return None
    parts = []
    b = _first(ref["batches"], run["batches"])
    if b is not None:
        parts.append(f"train batch {b} differs")
    for s, (pa, pb) in enumerate(zip(ref["grads"], run["grads"])):
        i = _first(pa, pb)
        if i is not None:
            parts.append(f"step {s} gradient of {_name(ref, i)}")
            break
    for s, (pa, pb) in enumerate(zip(ref["params"], run["params"])):
        diff = [i for i, (x, y) in enumerate(zip(pa, pb)) if x != y]
        if diff:
            parts.append(f"after step {s}: {len(diff)} parameter(s) differ, first {_name(ref, diff[0])}")
            break
    s = _first(ref["loss"], run["loss"])
    if s is not None:
        parts.append(f"loss call {s}: {ref['loss'][s]!r} against {run['loss'][s]!r}")
    return "; ".join(parts) or "the logs differ"


def _name(log: dict, i: int) -> str:
    names = log.get("names") or []
    return names[i] if i < len(names) else f"parameter #{i}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"] if args.train_args[:1] == ["--"] else args.train_args
    if args.child is not None:
        _child(args.child, train_args)
        return 0
    if "--out" not in train_args:
        print("give the run's --out folder among the train arguments (it is removed before each run)", file=sys.stderr)
        return 2
    out = Path(train_args[train_args.index("--out") + 1])
    ref, differ = None, 0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            log_path = Path(tmp) / f"run{k}.json"
            done = subprocess.run([sys.executable, __file__, "--child", str(log_path), "--", *train_args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                print(f"run {k} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            log = json.loads(log_path.read_text())
            if ref is None:
                ref = log
                print(f"run 0: {len(log['batches'])} train batches, {len(log['loss'])} loss calls (the reference)")
                continue
            part = where_they_part(ref, log)
            differ += part is not None
            print(f"run {k}: " + ("the same" if part is None else part), flush=True)
    print(f"{differ} of {args.runs - 1} runs differ from the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
