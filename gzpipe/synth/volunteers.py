"""Simulated volunteers walking the GZ2 decision tree.

Each answer's probability is tied to the galaxy's parameters (a volunteer sees arms more easily when they are
strong, calls a galaxy edge-on when it is inclined past ~75 degrees, ...). ``n_volunteers`` classifiers walk the
tree: the number who reach a task is the number who gave its parent answer, and they split over its answers
multinomially. So the vote counts are tree-consistent by construction, exactly like the real ones.
"""

from __future__ import annotations

import numpy as np

from gzpipe import schema
from gzpipe.synth.params import GalaxyParams


def _sig(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _norm(p: list[float]) -> np.ndarray:
    a = np.maximum(np.asarray(p, dtype=np.float64), 1e-3)
    return a / a.sum()


def answer_probabilities(p: GalaxyParams) -> dict[str, np.ndarray]:
    """Probability of each answer of each of the 11 tasks for one galaxy (keys: task names)."""
    spiral_vis = p.arm_strength * (1.0 - 0.8 * _sig((p.inclination_deg - 70) / 6))
    featured = p.kind == "disk"
    disky = (1 - p.bulge_to_total) if featured else 0.05
    feat = 0.15 + 2.5 * disky + 1.5 * spiral_vis + 1.2 * p.bar_strength + (0.8 if p.inclination_deg > 75 else 0)
    smooth = 0.2 + 3.0 * p.bulge_to_total * (1.0 if not featured else 0.6)
    art = 4.0 * p.star if p.kind == "star" else 0.05 + 0.5 * p.star
    edge = _sig((p.inclination_deg - 76) / 4) if featured else 0.1
    bt = p.bulge_to_total
    bulge_probs = [np.exp(-((bt - c) ** 2) / 0.02) for c in (0.02, 0.2, 0.45, 0.75)]
    odd = 0.05 + 0.9 * p.merger + (0.25 if p.companion else 0.0) + 0.3 * p.star
    q = p.axis_ratio
    pitch = p.pitch_deg
    n = p.n_arms
    arms_probs = [0.05 + (n == 1), 0.05 + (n == 2), 0.05 + (n == 3), 0.05 + (n == 4), 0.05 + (n >= 5), 0.25 + 0.6 * (1 - p.arm_strength)]
    return {
        "t01_smooth_or_features": _norm([smooth, feat, art]),
        "t02_edgeon": _norm([edge, 1 - edge]),
        "t03_bar": _norm([0.05 + 0.95 * p.bar_strength, 1 - 0.9 * p.bar_strength]),
        "t04_spiral": _norm([0.05 + 1.2 * spiral_vis, 1.0 - min(spiral_vis, 0.95)]),
        "t05_bulge_prominence": _norm(bulge_probs),
        "t06_odd": _norm([odd, 1.0]),
        "t07_rounded": _norm([np.exp(-((q - 0.95) ** 2) / 0.01), np.exp(-((q - 0.65) ** 2) / 0.02), np.exp(-((q - 0.3) ** 2) / 0.02)]),
        "t08_odd_feature": _norm([0.1, 0.1, 0.2 + p.merger, 0.15, 0.1 + 0.3 * p.star, 0.05 + 2.0 * p.merger, 0.05]),
        "t09_bulge_shape": _norm([0.1 + 3 * bt * (1 - p.bar_strength), 0.1 + 2 * p.bar_strength, 0.1 + 2 * (0.2 - min(bt, 0.2)) * 5]),
        "t10_arms_winding": _norm([np.exp(-((pitch - 10) ** 2) / 40), np.exp(-((pitch - 20) ** 2) / 40), np.exp(-((pitch - 33) ** 2) / 60)]),
        "t11_arms_number": _norm(arms_probs),
    }


def vote_counts(p: GalaxyParams, rng: np.random.Generator, n_volunteers: int) -> dict[str, np.ndarray]:
    """Vote counts per task (keys: task names), from ``n_volunteers`` walking the tree."""
    probs = answer_probabilities(p)
    counts: dict[str, np.ndarray] = {}
    answered: dict[str, int] = {}
    for t in schema.ALL_TASKS:  # parents precede children in Hart16 order
        reach = n_volunteers if t.parent is None else answered[t.parent]
        c = rng.multinomial(reach, probs[t.name]) if reach > 0 else np.zeros(len(t.answers), dtype=np.int64)
        counts[t.name] = c
        for col, k in zip(t.columns, c):
            answered[col] = int(k)
    return counts
