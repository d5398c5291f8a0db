"""The seed's three ensembles (equal, accuracy, inverse_mae): weighted means of the finished backbones' predictions.

Weights come from the **validation** split only (equal; proportional to validation accuracy; proportional to
1 / validation MAE) and the ensemble is evaluated on **test**, so no test information leaks into it. Any subset of
finished backbones works; the ones used are listed in ``weights.json``. Output ``<out>/ensemble_<method>/`` (see
``gzpipe.runs``); its ``inputs.json`` records the members' predictions, so a retrained member makes it stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzpipe import runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import remove_stale_tmp, write_json
from gzpipe.labels import aligned, split_labels
from gzpipe.metrics import compute_metrics
from gzpipe.models import BACKBONES, parse_backbones

from gzpipe.ensemble.methods import METHODS, WEIGHTED


@dataclass
class EnsembleConfig:
    method: str
    out: str = "artifacts"
    backbones: list[str] | None = None  # the seed's methods: None = every finished backbone
    members: list[str] | None = None  # stacked: run names (backbones and boosters); None = every finished one
    force: bool = False


def finished_backbones(out: str | Path) -> list[str]:
    return [b for b in BACKBONES if runs.is_complete(runs.backbone_dir(out, b), runs.BACKBONE)]


def weights_for(method: str, val_metrics: dict[str, dict]) -> dict[str, float]:
    names = list(val_metrics)
    if method == "equal":
        raw = np.ones(len(names))
    elif method == "accuracy":
        raw = np.array([val_metrics[n]["accuracy"] for n in names])
    elif method == "inverse_mae":
        raw = np.array([1.0 / max(val_metrics[n]["mae"], 1e-12) for n in names])
    else:
        raise GzpipeError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if raw.sum() <= 0:
        raw = np.ones(len(names))
    return dict(zip(names, (raw / raw.sum()).tolist()))


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


def run_ensemble(cfg: EnsembleConfig) -> dict:
    out = Path(cfg.out)
    if cfg.method not in METHODS:
        raise GzpipeError(f"unknown --method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if cfg.method not in WEIGHTED:
        from gzpipe.ensemble.stacked import run_stacked

        members = _parse_members(out, cfg.members)
        return run_stacked(out, members)
    used = parse_backbones(cfg.backbones) if cfg.backbones is not None else finished_backbones(out)
    if not used:
        raise GzpipeError(f"no finished backbone in {out} (no <backbone>/{runs.MARKERS[runs.BACKBONE]}); train one "
                          "first")
    check_members(out, used)
    run_dir = runs.ensemble_dir(out, cfg.method)
    remove_stale_tmp(run_dir)
    ids, preds, labels, _ = member_predictions(out, used)
    val_metrics = {b: compute_metrics(preds["val"][b], *labels["val"]) for b in used}
    w = weights_for(cfg.method, val_metrics)
    result: dict = {"method": cfg.method, "models": used, "weights_from": "val", "evaluated_on": "test", "weights": w,
                    "member_val_metrics": {b: {"accuracy": m["accuracy"], "mae": m["mae"]}
                                           for b, m in val_metrics.items()}}
    runs.unmark(run_dir, runs.ENSEMBLE)
    for split in runs.EVAL_SPLITS:
        p = sum(w[b] * preds[split][b] for b in used)
        result[split] = compute_metrics(p, *labels[split])
        runs.write_predictions(run_dir, split, ids[split], p)
    write_json(run_dir / runs.WEIGHTS, {k: result[k] for k in ("method", "models", "weights", "weights_from",
                                                                "member_val_metrics")})
    write_json(run_dir / runs.METRICS, {"model": f"ensemble_{cfg.method}", **result})
    runs.record_inputs(run_dir, {f"{b} {split} predictions": runs.predictions_path(out / b, split)
                                 for b in used for split in runs.EVAL_SPLITS})
    runs.mark_complete(run_dir, runs.ENSEMBLE, f"ensemble_{cfg.method}: test MAE {result['test']['mae']:.5f}")
    print(f"ensemble_{cfg.method} of {', '.join(used)}: test MAE {result['test']['mae']:.4f}  accuracy "
          f"{result['test']['accuracy']:.4f}  weights " + ", ".join(f"{b} {v:.3f}" for b, v in w.items()), flush=True)
    return result


def _parse_members(out: Path, members) -> list[str] | None:
    if members is None:
        return None
    names = [m.strip() for m in (members.split(",") if isinstance(members, str) else members) if m.strip()]
    for m in names:
        d = out / m
        if runs.kind_of(d) not in (runs.BACKBONE, runs.BOOSTER):
            raise GzpipeError(f"--members: {m} is not a finished backbone or booster in {out}")
    return names


def load_weights(run_dir: str | Path) -> dict:
    """``{member run name: weight}`` of a finished ensemble (a weight is a number, or 30 per-target numbers)."""
    return runs.read_json(run_dir, runs.WEIGHTS)["weights"]
