"""The Galaxy Zoo 2 decision tree: gzpipe's single source of truth for tasks, answers and targets.

gzpipe regresses 30 vote fractions over 10 tasks: the whole GZ2 tree (Willett et al. 2013, Table 2) except
t08 "odd feature". Answers are kept in Hart et al. (2016) order with their Hart16 names, so
``TARGET_NAMES[i]`` is the column stem of target ``i`` in ``gz2_hart16.csv`` (append ``_debiased`` etc.).

Two kinds of fraction appear in the wild:

* **conditional** (Hart16 ``_fraction`` / ``_weighted_fraction``): the share of the volunteers *who reached the
  task* that gave an answer; within a task they sum to 1.
* **cumulative** (Kaggle "Galaxy Challenge"): the conditional fraction multiplied down the tree, so a task's
  answers sum to the cumulative value of the answer that led to it.

``conditional_to_cumulative`` and ``cumulative_to_conditional`` convert 30-wide arrays both ways. A task that no
volunteer reached gives 0/0: its conditional fractions become 0 and its mask 0, so losses ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str  # Hart16 prefix, e.g. "t02_edgeon"
    answers: tuple[str, ...]  # answer suffixes, e.g. ("a04_yes", "a05_no")
    parent: str | None  # full name of the answer that leads here; None when always asked
    kaggle_question: int  # Kaggle "ClassQ.k" question number
    kaggle_answers: tuple[int, ...] | None = None  # Kaggle answer numbers, when not simply 1..n

    @property
    def columns(self) -> tuple[str, ...]:
        """Full Hart16 answer names, e.g. ``t02_edgeon_a04_yes``."""
        return tuple(f"{self.name}_{a}" for a in self.answers)


# The whole tree in Hart16 order (11 tasks, 37 answers; there is no a35).
ALL_TASKS: tuple[Task, ...] = (
    Task("t01_smooth_or_features", ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"), None, 1),
    Task("t02_edgeon", ("a04_yes", "a05_no"), "t01_smooth_or_features_a02_features_or_disk", 2),
    Task("t03_bar", ("a06_bar", "a07_no_bar"), "t02_edgeon_a05_no", 3),
    Task("t04_spiral", ("a08_spiral", "a09_no_spiral"), "t02_edgeon_a05_no", 4),
    Task(
        "t05_bulge_prominence",
        ("a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant"),
        "t02_edgeon_a05_no",
        5,
    ),
    Task("t06_odd", ("a14_yes", "a15_no"), None, 6),
    Task("t07_rounded", ("a16_completely_round", "a17_in_between", "a18_cigar_shaped"), "t01_smooth_or_features_a01_smooth", 7),
    Task(
        "t08_odd_feature",
        ("a19_ring", "a20_lens_or_arc", "a21_disturbed", "a22_irregular", "a23_other", "a24_merger", "a38_dust_lane"),
        "t06_odd_a14_yes",
        8,
    ),
    Task("t09_bulge_shape", ("a25_rounded", "a26_boxy", "a27_no_bulge"), "t02_edgeon_a04_yes", 9),
    Task("t10_arms_winding", ("a28_tight", "a29_medium", "a30_loose"), "t04_spiral_a08_spiral", 10),
    Task(
        "t11_arms_number",
        ("a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell"),
        "t04_spiral_a08_spiral",
        11,
    ),
)

#: The 10 tasks gzpipe predicts (t08 excluded, as in Zoobot's GZ2 schema).
TASKS: tuple[Task, ...] = tuple(t for t in ALL_TASKS if t.name != "t08_odd_feature")

class Names(list):
    """A fixed list of column names: a list, so that ``df[schema.TARGET_NAMES]`` selects the columns (pandas reads
    a tuple as one key), that refuses to be changed (it is the schema)."""

    def _fixed(self, *args, **kwargs):
        raise TypeError("gzpipe's schema names are fixed; copy them (list(...)) to change a copy")

    append = extend = insert = remove = pop = clear = sort = reverse = __setitem__ = __delitem__ = _fixed
    __iadd__ = __imul__ = _fixed

    def __hash__(self) -> int:
        return hash(tuple(self))


#: The 30 target names in Hart16 order.
TARGET_NAMES: Names = Names(c for t in TASKS for c in t.columns)
N_TARGETS = len(TARGET_NAMES)
assert N_TARGETS == 30  # invariant of the tree above

#: Column slice of each task within the 30 targets.
TASK_SLICES: dict[str, slice] = {}
_start = 0
for _t in TASKS:
    TASK_SLICES[_t.name] = slice(_start, _start + len(_t.answers))
    _start += len(_t.answers)
del _start, _t

TARGET_INDEX: dict[str, int] = {name: i for i, name in enumerate(TARGET_NAMES)}

#: Index of each task's parent answer in the 30 targets (None for tasks that are always asked).
PARENT_INDEX: dict[str, int | None] = {
    t.name: (TARGET_INDEX[t.parent] if t.parent else None) for t in TASKS
}

#: Hart16 column families that hold vote fractions; ``--target`` picks one.
TARGET_KINDS: tuple[str, ...] = ("debiased", "weighted_fraction", "fraction")

#: Kaggle column names of all 37 answers, in Hart16 order (Class1.1 ... Class11.6).
KAGGLE_COLUMNS: Names = Names(
    f"Class{t.kaggle_question}.{k}" for t in ALL_TASKS for k in range(1, len(t.answers) + 1)
)
#: Kaggle column of each of the 30 targets.
KAGGLE_TARGET_COLUMNS: Names = Names(
    f"Class{t.kaggle_question}.{k}" for t in TASKS for k in range(1, len(t.answers) + 1)
)

#: galaxy-datasets / Zoobot GZ2 catalogues (``gz2_train_catalog.parquet``): each of the 30 targets' question and
#: answer. Columns: ``{question}_{answer}`` (vote counts), ``{question}_total-votes``, ``{question}_{answer}_fraction``.
ZOOBOT_GZ2: dict[str, tuple[str, str]] = {
    "t01_smooth_or_features_a01_smooth": ("smooth-or-featured-gz2", "smooth"),
    "t01_smooth_or_features_a02_features_or_disk": ("smooth-or-featured-gz2", "featured-or-disk"),
    "t01_smooth_or_features_a03_star_or_artifact": ("smooth-or-featured-gz2", "artifact"),
    "t02_edgeon_a04_yes": ("disk-edge-on-gz2", "yes"),
    "t02_edgeon_a05_no": ("disk-edge-on-gz2", "no"),
    "t03_bar_a06_bar": ("bar-gz2", "yes"),
    "t03_bar_a07_no_bar": ("bar-gz2", "no"),
    "t04_spiral_a08_spiral": ("has-spiral-arms-gz2", "yes"),
    "t04_spiral_a09_no_spiral": ("has-spiral-arms-gz2", "no"),
    "t05_bulge_prominence_a10_no_bulge": ("bulge-size-gz2", "no"),
    "t05_bulge_prominence_a11_just_noticeable": ("bulge-size-gz2", "just-noticeable"),
    "t05_bulge_prominence_a12_obvious": ("bulge-size-gz2", "obvious"),
    "t05_bulge_prominence_a13_dominant": ("bulge-size-gz2", "dominant"),
    "t06_odd_a14_yes": ("something-odd-gz2", "yes"),
    "t06_odd_a15_no": ("something-odd-gz2", "no"),
    "t07_rounded_a16_completely_round": ("how-rounded-gz2", "round"),
    "t07_rounded_a17_in_between": ("how-rounded-gz2", "in-between"),
    "t07_rounded_a18_cigar_shaped": ("how-rounded-gz2", "cigar"),
    "t09_bulge_shape_a25_rounded": ("bulge-shape-gz2", "round"),
    "t09_bulge_shape_a26_boxy": ("bulge-shape-gz2", "boxy"),
    "t09_bulge_shape_a27_no_bulge": ("bulge-shape-gz2", "no-bulge"),
    "t10_arms_winding_a28_tight": ("spiral-winding-gz2", "tight"),
    "t10_arms_winding_a29_medium": ("spiral-winding-gz2", "medium"),
    "t10_arms_winding_a30_loose": ("spiral-winding-gz2", "loose"),
    "t11_arms_number_a31_1": ("spiral-arm-count-gz2", "1"),
    "t11_arms_number_a32_2": ("spiral-arm-count-gz2", "2"),
    "t11_arms_number_a33_3": ("spiral-arm-count-gz2", "3"),
    "t11_arms_number_a34_4": ("spiral-arm-count-gz2", "4"),
    "t11_arms_number_a36_more_than_4": ("spiral-arm-count-gz2", "more-than-4"),
    "t11_arms_number_a37_cant_tell": ("spiral-arm-count-gz2", "cant-tell"),
}
assert list(ZOOBOT_GZ2) == list(TARGET_NAMES)  # invariant: one entry per target, in target order


def zoobot_columns(kind: str = "count") -> list[str]:
    """The 30 targets' Zoobot column names: ``count`` (``bar-gz2_yes``), ``fraction`` (``bar-gz2_yes_fraction``)
    or ``total`` (the question's ``bar-gz2_total-votes``, once per target)."""
    q = [ZOOBOT_GZ2[n] for n in TARGET_NAMES]
    if kind == "count":
        return [f"{question}_{answer}" for question, answer in q]
    if kind == "fraction":
        return [f"{question}_{answer}_fraction" for question, answer in q]
    if kind == "total":
        return [f"{question}_total-votes" for question, _ in q]
    raise ValueError(f"unknown Zoobot column kind {kind!r}")


# Tasks in an order where every parent comes before its children (Hart16 order already is one).
_TOPO: tuple[Task, ...] = TASKS


def target_columns(kind: str) -> list[str]:
    """Hart16 column names of the 30 targets for a column family, e.g. ``..._debiased``."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
    return [f"{n}_{kind}" for n in TARGET_NAMES]


def conditional_to_cumulative(conditional: np.ndarray) -> np.ndarray:
    """Multiply conditional (Hart16) fractions down the tree into cumulative (Kaggle-style) ones.

    ``conditional`` is ``(..., 30)``. NaNs propagate to the answer and its descendants.
    """
    cond = np.asarray(conditional, dtype=np.float64)
    if cond.shape[-1] != N_TARGETS:
        raise ValueError(f"expected {N_TARGETS} columns, got {cond.shape[-1]}")
    cum = np.empty_like(cond)
    for t in _TOPO:
        s = TASK_SLICES[t.name]
        p = PARENT_INDEX[t.name]
        reach = 1.0 if p is None else cum[..., p : p + 1]
        cum[..., s] = cond[..., s] * reach
    return cum


def cumulative_to_conditional(cumulative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide cumulative (Kaggle-style) fractions by the probability of reaching each task.

    Returns ``(conditional, mask)``, both ``(..., 30)``. Where a task was never reached (its parent's cumulative
    value is 0) the conditional fractions are 0/0: they are set to 0 and their mask to 0. NaN inputs give NaN
    with mask 0.
    """
    cum = np.asarray(cumulative, dtype=np.float64)
    if cum.shape[-1] != N_TARGETS:
        raise ValueError(f"expected {N_TARGETS} columns, got {cum.shape[-1]}")
    cond = np.empty_like(cum)
    mask = np.ones(cum.shape, dtype=bool)
    for t in _TOPO:
        s = TASK_SLICES[t.name]
        p = PARENT_INDEX[t.name]
        if p is None:
            cond[..., s] = cum[..., s]
            continue
        reach = cum[..., p : p + 1]
        unreached = reach <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            cond[..., s] = np.where(unreached, 0.0, cum[..., s] / np.where(unreached, 1.0, reach))
        mask[..., s] &= ~np.broadcast_to(unreached, cond[..., s].shape)
    nan = np.isnan(cond)
    mask &= ~nan
    return cond, mask


def kaggle_to_targets(kaggle37: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle's 37 cumulative columns (in ``KAGGLE_COLUMNS`` order) -> 30 conditional targets and their mask."""
    k = np.asarray(kaggle37, dtype=np.float64)
    if k.shape[-1] != len(KAGGLE_COLUMNS):
        raise ValueError(f"expected {len(KAGGLE_COLUMNS)} Kaggle columns, got {k.shape[-1]}")
    keep = [KAGGLE_COLUMNS.index(c) for c in KAGGLE_TARGET_COLUMNS]
    return cumulative_to_conditional(k[..., keep])
