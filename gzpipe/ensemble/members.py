"""The members an ensemble combines: which finished runs there are, which are usable, and their predictions on the
galaxies they all predicted. Both ensemble methods (``weighted``, ``stacked``) read their members through here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gzpipe import runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.labels import aligned, split_labels
from gzpipe.models import BACKBONES


def finished_backbones(out: str | Path) -> list[str]:
    """The finished backbone runs in ``out``: the registry's order first, then the others (timm: or plug-in
    backbones registered in another process) by name."""
    found = [r.name for r in runs.finished_runs(out) if r.kind == runs.BACKBONE]
    return [b for b in BACKBONES if b in found] + [b for b in found if b not in BACKBONES]


def base_models(out: Path) -> list[str]:
    """Every finished, current backbone and booster run in ``out`` (the stacked ensemble's default members)."""
    return [r.name for r in runs.finished_runs(out)
            if r.kind in (runs.BACKBONE, runs.BOOSTER) and not runs.changed_inputs(r.dir)]


def check_members(out: Path, names: list[str], option: str = "--backbones") -> None:
    """Each member must be a finished, current backbone run; the error names the one that is not and the fix."""
    for b in names:
        d = runs.backbone_dir(out, b)
        if not runs.is_complete(d, runs.BACKBONE):
            state = "is unfinished" if d.exists() else "is not trained"
            raise GzpipeError(f"{option}: {b} {state} in {out}; train it first: gzpipe train --backbone {b} "
                              f"--shards SHARDS --out {out}")
        changed = runs.changed_inputs(d)
        if changed:
            raise GzpipeError(f"{option}: " + runs.stale_message(d, changed, f"retrain it (gzpipe train --backbone "
                                                                        f"{b} --restart ...)"))


def parse_members(out: Path, members) -> list[str] | None:
    """``--members``: run names of finished backbones and boosters in ``out``."""
    if members is None:
        return None
    names = [m.strip() for m in (members.split(",") if isinstance(members, str) else members) if m.strip()]
    for m in names:
        if runs.kind_of(out / m) not in (runs.BACKBONE, runs.BOOSTER):
            raise GzpipeError(f"--members: {m} is not a finished backbone or booster in {out}")
    return list(dict.fromkeys(names))


def member_predictions(out: Path, members: list[str]) -> tuple[dict, dict, dict, str]:
    """(ids by split, {split: {member: N x 30}}, {split: (targets, mask)}, shards) on the galaxies all members
    predicted."""
    shards = {runs.shards_of(out / b) for b in members}
    if len(shards) > 1:
        raise GzpipeError(f"the members were trained on different shards ({', '.join(sorted(shards))}); an ensemble "
                          "needs one test set")
    shard_dir = shards.pop()
    ids, preds, labels = {}, {}, {}
    for split in runs.EVAL_SPLITS:
        frames = {b: runs.read_predictions(out / b, split) for b in members}
        common = sorted(set.intersection(*(set(f.index) for f in frames.values())))
        ids[split] = common
        preds[split] = {b: f.loc[common, list(schema.TARGET_NAMES)].to_numpy(np.float64) for b, f in frames.items()}
        labels[split] = aligned(split_labels(shard_dir, split), common)
    return ids, preds, labels, shard_dir
