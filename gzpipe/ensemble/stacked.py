"""The `stacked` ensemble: non-negative weights over every finished base model (backbones and boosters), for each
target (which may share them: see below), chosen on the validation split only by greedy forward selection with
replacement (Caruana et al. 2004).

Selection adds, one step at a time, the member whose inclusion most lowers the val MAE of the running average (a
member may be added again: its weight grows). Against overfitting a small val split:

* **bagging**: the selection runs on ``bags`` random halves of the val galaxies, and the weights are the mean of the
  bags' weights (a member that only helps on a few galaxies is diluted);
* **a cap**: at most ``steps`` additions per bag (weights are multiples of 1 / steps);
* **shrinkage**: the bagged weights are pulled toward equal weights over the members by ``shrink``;
* **sharing**: one weight vector per target, per task (its answers share one) or for all 30 targets together
  (``grouping``): fewer weights to fit where val is too small to tell the targets apart.

Grouping and shrinkage are chosen together by K-fold cross-validation *within* val (fit on K-1 folds, score on the
held-out one). On the demo's 66 val galaxies per-target weights cross-validated worse than the best single member
(benchmarks/RESULTS.md); sharing is how the selection can say so.

**What is minimised.** Where the shards name a random draw of the galaxies the models are for (``gzpipe shard
--random-draw``), the study is judged by the Kaggle RMSE on those galaxies, and the weights are chosen for it: on
the random-draw val galaxies, each target's squared error weighted by the square of its question's reach (its
parent's true cumulative fraction: a deep answer's error counts in the cumulative metric by the share of
volunteers who reached it), and the grouping and shrinkage by the cross-validated Kaggle RMSE itself. Elsewhere the
val MAE, as before.

Test is never read to fit anything; it is only scored. Weights are saved in ``weights.json`` as {member: [30]}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzpipe import runs, schema
from gzpipe.ensemble.members import member_predictions
from gzpipe.metrics import compute_metrics


GROUPINGS = ("target", "task", "all")
SHARING = {"target": "one weight vector per target", "task": "one weight vector per task",
           "all": "one weight vector for all 30 targets"}


@dataclass
class StackConfig:
    steps: int = 25
    bags: int = 20
    bag_share: float = 0.5
    shrink_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    groupings: tuple[str, ...] = GROUPINGS
    folds: int = 5
    seed: int = 0
    max_rows: int = 5000  # val galaxies the weights are chosen on (a random subset beyond; the cost is linear)
    objective: str = "mae"  # or "kaggle": the Kaggle RMSE (reach-weighted squared errors; see the module docstring)
    min_random: int = 50  # fewer random-draw val galaxies than this: the weights are chosen on the MAE of all val


def _select(p: np.ndarray, y: np.ndarray, steps: int, w: np.ndarray | None = None) -> np.ndarray:
    """Greedy forward selection with replacement: p (n, M) member predictions, y (n,) targets -> weights (M,). With
    row weights ``w``, the weighted squared error is minimised, else the MAE."""
    n, m = p.shape
    counts = np.zeros(m)
    total = np.zeros(n)
    for k in range(1, steps + 1):
        # the error of the running average with each member added once more
        d = (total[:, None] + p) / k - y[:, None]
        cand = np.abs(d).mean(0) if w is None else (w[:, None] * d * d).sum(0)
        best = int(np.argmin(cand))
        counts[best] += 1
        total += p[:, best]
    return counts / counts.sum()


def _bagged(p: np.ndarray, y: np.ndarray, cfg: StackConfig, rng: np.random.Generator,
            weight: np.ndarray | None = None) -> np.ndarray:
    """Bagged selection weights (M,) of one group's pooled rows, before shrinkage."""
    n, m = p.shape
    if n == 0:
        return np.full(m, 1.0 / m)
    w = np.zeros(m)
    size = max(1, int(round(cfg.bag_share * n)))
    for _ in range(cfg.bags):
        rows = rng.choice(n, size=size, replace=False)
        w += _select(p[rows], y[rows], cfg.steps, weight[rows] if weight is not None else None)
    return w / cfg.bags


def reach(y: np.ndarray) -> np.ndarray:
    """(n, 30): each answer's question's reach, its parent's true cumulative fraction (1 for the first questions)."""
    cum = schema.conditional_to_cumulative(np.nan_to_num(y))
    out = np.ones_like(cum)
    for t, s in schema.TASK_SLICES.items():
        p = schema.PARENT_INDEX[t]
        if p is not None:
            out[:, s] = cum[:, p:p + 1]
    return out


def groups(grouping: str) -> list[list[int]]:
    """The targets that share one weight vector: each target alone, each task's answers, or all 30 together."""
    if grouping == "target":
        return [[j] for j in range(schema.N_TARGETS)]
    if grouping == "task":
        return [list(range(s.start, s.stop)) for s in schema.TASK_SLICES.values()]
    return [list(range(schema.N_TARGETS))]


def _pooled(preds: np.ndarray, y: np.ndarray, mask: np.ndarray, rows: np.ndarray, targets: list[int],
            weight: np.ndarray | None = None):
    """(rows x targets of the group, M) predictions, their targets and row weights (None: unweighted), valid
    entries only."""
    ps = [preds[rows & mask[:, j], :, j] for j in targets]
    ys = [y[rows & mask[:, j], j] for j in targets]
    ws = None if weight is None else np.concatenate([weight[rows & mask[:, j], j] for j in targets])
    return np.concatenate(ps), np.concatenate(ys), ws


def _raw_weights(preds, y, mask, rows, grouping: str, cfg: StackConfig, salt: int) -> np.ndarray:
    """Unshrunk weights (M, 30) fitted on ``rows`` of val with one weight vector per group of ``grouping``."""
    w = np.zeros((preds.shape[1], schema.N_TARGETS))
    weight = reach(y) ** 2 if cfg.objective == "kaggle" else None
    for g, targets in enumerate(groups(grouping)):
        p, t, rw = _pooled(preds, y, mask, rows, targets, weight)
        rng = np.random.default_rng([cfg.seed, GROUPINGS.index(grouping), g, salt])
        w[:, targets] = _bagged(p, t, cfg, rng, rw)[:, None]
    return w


def _shrunk(w: np.ndarray, shrink: float) -> np.ndarray:
    return (1 - shrink) * w + shrink / w.shape[0]


def choose(preds: np.ndarray, y: np.ndarray, mask: np.ndarray, cfg: StackConfig) -> tuple[tuple[str, float], dict]:
    """The (grouping, shrinkage) with the lowest K-fold cross-validated error on val, all targets together: the MAE,
    or with ``objective`` kaggle the Kaggle RMSE (cumulative fractions, every known value)."""
    from gzpipe.report.intervals import KaggleTerms

    n = preds.shape[0]
    fold = np.random.default_rng(cfg.seed).permutation(n) % max(2, min(cfg.folds, n))
    err: dict = {}
    count = 0
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        terms = KaggleTerms(y[te], mask[te], every_known=True) if cfg.objective == "kaggle" else None
        count += int((mask & te[:, None]).sum()) if terms is None else terms.values
        for grouping in cfg.groupings:
            raw = _raw_weights(preds, y, mask, tr, grouping, cfg, int(f) + 1)
            for s in cfg.shrink_grid:
                w = _shrunk(raw, s)
                p = np.einsum("nmj,mj->nj", preds[te], w)
                e = float(terms(p)[0].sum()) if terms is not None else float(np.abs(p - y[te])[mask[te]].sum())
                err[(grouping, s)] = err.get((grouping, s), 0.0) + e
    scores = {k: v / max(count, 1) for k, v in err.items()}
    if cfg.objective == "kaggle":
        scores = {k: float(np.sqrt(v)) for k, v in scores.items()}
    return min(scores, key=scores.get), scores


def fit_stack(preds: np.ndarray, y: np.ndarray, mask: np.ndarray, cfg: StackConfig) -> tuple[np.ndarray, dict]:
    """preds (n, M, 30), y (n, 30), mask (n, 30) of the val split -> weights (M, 30) and how they were chosen."""
    (grouping, shrink), scores = choose(preds, y, mask, cfg)
    weights = _shrunk(_raw_weights(preds, y, mask, np.ones(len(preds), bool), grouping, cfg, 0), shrink)
    what = "cv_kaggle_rmse" if cfg.objective == "kaggle" else "cv_mae"
    return weights, {"grouping": grouping, "shrink": shrink,
                     what: {f"{g} shrink {s}": round(v, 6) for (g, s), v in scores.items()}}


def fit_stacked(out: Path, used: list[str], cfg: StackConfig | None = None) -> tuple[dict, dict, dict]:
    """(result, {split: N x 30 predictions}, {split: ids}) of the stacked ensemble over ``used``."""
    cfg = cfg or StackConfig()
    ids, preds, labels, shards = member_predictions(out, used)
    y_val, m_val = labels["val"]
    p_val = np.stack([preds["val"][b] for b in used], axis=1)  # (n, M, 30)
    rows = np.arange(len(p_val))
    judged_on = "all val galaxies, MAE"
    from gzpipe.labels import random_draw_ids

    chosen = random_draw_ids(shards, "val")
    if chosen and len(chosen) >= cfg.min_random:  # the study is judged by the Kaggle RMSE on the random draw
        keep = set(chosen)
        rows = np.array([k for k, i in enumerate(ids["val"]) if i in keep])
        cfg = dataclasses.replace(cfg, objective="kaggle")
        judged_on = f"the {len(rows)} random-draw val galaxies, Kaggle RMSE"
    if len(rows) > cfg.max_rows:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_rows, replace=False))
    # a question no member learned is NaN in every member and has no val label: its weights fit on a neutral 0.5,
    # and its predictions stay NaN (finite weights times NaN)
    weights, how = fit_stack(np.nan_to_num(p_val[rows], nan=0.5), np.nan_to_num(y_val[rows]), m_val[rows].astype(bool), cfg)
    result: dict = {"method": "stacked", "models": used, "weights_from": "val", "evaluated_on": "test",
                    "weights": {b: weights[k].round(6).tolist() for k, b in enumerate(used)}, **how,
                    "weights_fitted_on": int(len(rows)), "weights_minimise": judged_on,
                    "member_val_metrics": {b: {"mae": compute_metrics(preds["val"][b], *labels["val"])["mae"]}
                                           for b in used}}
    out_preds = {}
    for split in runs.EVAL_SPLITS:
        out_preds[split] = np.einsum("nmj,mj->nj", np.stack([preds[split][b] for b in used], axis=1), weights)
        result[split] = compute_metrics(out_preds[split], *labels[split])
    return result, out_preds, ids


def summary(result: dict) -> str:
    used = result["models"]
    mean = {b: float(np.mean(result["weights"][b])) for b in used}
    top = sorted(used, key=lambda b: -mean[b])[:4]
    return (f"({SHARING[result['grouping']]}, shrink {result['shrink']}) mean weights "
            + ", ".join(f"{b} {mean[b]:.3f}" for b in top))
