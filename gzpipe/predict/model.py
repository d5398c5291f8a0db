"""Any finished model as one predictor of the 30 fractions: a backbone, a booster (through its backbone's
features) or an ensemble (its members' weighted sum; a weight is one number, or one per target). Members trained
at different image sizes or crops are fed one (size, crop) view at a time; every backbone is loaded once
(``gzpipe.runs.load_trained``) and serves all the members that need it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gzpipe import runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.loaders.tta import views


@dataclass
class Member:
    name: str
    weight: np.ndarray  # 30 weights (a scalar weight repeated)
    backbone: str
    booster: object | None = None  # gzpipe.boost.TrainedBooster


@dataclass
class Predictor:
    name: str
    kind: str
    members: list[Member]
    backbones: dict = field(default_factory=dict)  # name -> runs.TrainedBackbone
    inputs: dict = field(default_factory=dict)  # for the output's provenance

    @property
    def views(self) -> list[tuple[int, float, int]]:
        """The (image size, crop, channels) its backbones were trained at: each input is made into every one."""
        return sorted({b.view for b in self.backbones.values()})

    @property
    def _by_catalogue(self) -> list:
        """Its boosters that learnt several catalogues' labels (``gzpipe boost --by-catalogue``)."""
        return [m.booster for m in self.members if m.booster is not None and m.booster.catalogues]

    @property
    def _headed(self) -> list:
        """Its backbones with a head per catalogue (``gzpipe train --catalogue-heads``)."""
        return [b for b in self.backbones.values() if b.heads]

    def catalogues(self) -> list[str]:
        """The catalogue formats whose labels its by-catalogue boosters or headed backbones learnt (empty: none)."""
        return sorted({c for b in self._by_catalogue for c in b.catalogues} | {c for b in self._headed for c in b.heads})

    @property
    def catalogue(self) -> str | None:
        """Whose labels it predicts, where it learnt several catalogues' (None: it learnt one convention)."""
        return next((b.catalogue for b in self._by_catalogue), getattr(self, "_choice", None))

    def use_catalogue(self, choice: str | None) -> None:
        """Have every by-catalogue booster and headed backbone predict ``choice``'s labels (None: the catalogue with
        the most train galaxies; "own": each galaxy's own, by its id's prefix, and that default's for a galaxy of no
        learnt catalogue)."""
        from gzpipe.boost.catalogues import OWN, check_catalogue, default_catalogue

        aware, headed = self._by_catalogue, self._headed
        if not aware and not headed:
            if choice is not None:
                raise GzpipeError(f"--catalogue {choice!r}: {self.name} learnt one convention (none of its boosters "
                                  "was trained --by-catalogue, none of its networks has a head per catalogue); leave "
                                  "--catalogue out")
            return
        rows: dict[str, int] = {}
        for b in aware:
            for c, n in b.catalogue_rows.items():
                rows[c] = max(rows.get(c, 0), n)
        largest = default_catalogue(rows) if rows else headed[0].heads[0]
        which = largest if choice is None else check_catalogue(choice, self.catalogues(), self.name)
        for b in aware:
            b.catalogue = check_catalogue(which, b.catalogues, b.name)
            b.fallback = largest if which == OWN else None
        self._choice, self._fallback = which, largest

    def conventions(self, ids) -> np.ndarray | None:
        """Whose labels each of ``ids`` is predicted as (None: the model learnt one convention)."""
        aware = self._by_catalogue
        if aware:
            return aware[0].conventions(ids)
        if not self._headed:
            return None
        from gzpipe.boost.catalogues import OWN, catalogue_of

        choice = getattr(self, "_choice", None) or self._headed[0].heads[0]
        if choice != OWN:
            return np.array([choice] * len(ids), dtype=object)
        known = set(self.catalogues())
        return np.array([c if c in known else self._fallback for c in catalogue_of(ids)], dtype=object)

    @property
    def stretch(self) -> str:
        """The stretch that made its training images 8-bit (``gzpipe.pixels.stretch``): new deep images and FITS
        are made 8-bit the same way. Backbones trained on shards of different stretches cannot share one input."""
        found = {b.stretch for b in self.backbones.values()}
        if len(found) > 1:
            raise GzpipeError(f"{self.name}'s backbones were trained on images stretched differently "
                              f"({', '.join(sorted(found))}); predict with one of them at a time")
        return found.pop()

    def stored(self, view: tuple[int, float, int]) -> tuple[int | None, int]:
        """(side, JPEG quality) the training images of the backbones at ``view`` were stored at (``gzpipe shard
        --resize``): a new image file is stored the same way before the view is cut from it, so that the model
        sees the pixels it was trained on. Backbones of one view stored at different sizes cannot share an input."""
        found = {self.backbones[m.backbone].stored for m in self.members_at(view)}
        if len(found) > 1:
            raise GzpipeError(f"{self.name}'s backbones at {view[0]} px were trained on images stored at different "
                              f"sizes ({', '.join(str(s) for s, _ in sorted(found, key=str))}); predict with one of "
                              "them at a time")
        return found.pop() if found else (None, 90)

    def spread(self, members: dict[str, np.ndarray], mean: np.ndarray) -> np.ndarray:
        """The spread of the members' predictions around the ensemble's: the weighted standard deviation, per
        galaxy and target (the ensemble's own weights, normalised per target)."""
        w = np.stack([m.weight for m in self.members])  # members x 30
        w = w / np.where(w.sum(axis=0) > 0, w.sum(axis=0), 1.0)
        var = sum(w[k] * (members[m.name] - mean) ** 2 for k, m in enumerate(self.members))
        return np.sqrt(var)

    def untrained(self) -> list[str]:
        """The tasks none of its backbones had a label for: predicted as empty (NaN), never as a made-up 0.5."""
        known = [b.tasks_trained for b in self.backbones.values()]
        if any(k is None for k in known):
            return []
        learned = set().union(*map(set, known)) if known else set()
        return [t for t in schema.TASK_SLICES if t not in learned]

    def members_at(self, view: tuple[int, float, int]) -> list[Member]:
        return [m for m in self.members if self.backbones[m.backbone].view == view]

    def predict(self, images: torch.Tensor | list, view: tuple[int, float, int], tta: int = 1,
                tta_kind: str = "dihedral", ids=None, members: dict | None = None) -> np.ndarray:
        """The weighted sum over the members trained at ``view`` (image size, crop) of their predictions for a
        normalised batch made at that view, averaged over ``tta`` views (features averaged over views for
        boosters, as `gzpipe features --tta` does); ``images`` may be the list of views already made (a
        ``ViewLoader``'s, for the kinds warped from the stored pixels). ``ids``: the galaxies', for by-catalogue boosters asked for
        each galaxy's own catalogue. The questions it had no training labels for are NaN (``untrained``).
        ``members``: a dict that receives each member's own predictions (name -> N x 30), for the spread across an
        ensemble's members."""
        vs = list(images) if isinstance(images, list) else views(images, tta, tta_kind)
        n = len(vs[0])
        out = np.zeros((n, schema.N_TARGETS))
        need = {m.backbone for m in self.members_at(view)}
        got = {}
        names = self.conventions(ids if ids is not None else [""] * n) if self._headed else None
        for b in need:
            t = self.backbones[b]
            fs, ps = [], []
            for v in vs:
                f, p = t.features_and_predictions(v, list(names) if names is not None and t.heads else None)
                fs.append(f)
                ps.append(p)
            got[b] = (torch.stack(fs).mean(0).cpu().numpy(), torch.stack(ps).mean(0).cpu().numpy())
        for m in self.members_at(view):
            f, p = got[m.backbone]
            if m.booster is not None:
                p = m.booster.predict(f, ids)
            out += np.clip(p, 0.0, 1.0) * m.weight
            if members is not None:
                members[m.name] = np.clip(p, 0.0, 1.0)
        for t in self.untrained():  # a question it had no labels for: empty, never a confident-looking 0.5
            out[:, schema.TASK_SLICES[t]] = np.nan
        return out


def _weights(w) -> np.ndarray:
    a = np.asarray(w, dtype=np.float64)
    return np.full(schema.N_TARGETS, float(a)) if a.ndim == 0 else a.reshape(schema.N_TARGETS)


def _member(root: Path, name: str, weight) -> Member:
    d = root / name
    kind = runs.kind_of(d)
    if kind == runs.BACKBONE:
        return Member(name, _weights(weight), name)
    if kind == runs.BOOSTER:
        from gzpipe.boost import load_booster

        b = load_booster(d)
        return Member(name, _weights(weight), b.backbone, b)
    raise GzpipeError(f"the ensemble needs {name} at {d}, which is not a finished backbone or booster there")


def members_of(model_dir: Path, kind: str) -> dict[str, dict]:
    """A booster's or an ensemble's members: {run name: {"kind", "backbone", "weight"}} (a weight is a number or 30)."""
    d = Path(model_dir)
    if kind == runs.BOOSTER:
        return {d.name: {"kind": runs.BOOSTER, "backbone": runs.read_json(d, runs.CONFIG)["backbone"], "weight": 1.0}}
    from gzpipe.ensemble import load_weights

    out = {}
    for name, w in load_weights(d).items():
        mk = runs.kind_of(d.parent / name)
        if mk not in (runs.BACKBONE, runs.BOOSTER):
            raise GzpipeError(f"the ensemble needs {name} at {d.parent / name}, which is not a finished backbone or "
                              "booster there")
        backbone = name if mk == runs.BACKBONE else runs.read_json(d.parent / name, runs.CONFIG)["backbone"]
        out[name] = {"kind": mk, "backbone": backbone, "weight": w}
    return out


def _load_export(d: Path, device: torch.device) -> Predictor:
    """A `gzpipe export` folder: a backbone, or a booster / ensemble with its members inside (gzpipe.export)."""
    from gzpipe.boost import load_booster
    from gzpipe.export import load_exported
    from gzpipe.models.weights import export_settings, read_folder_config

    cfg = export_settings(read_folder_config(d)) or {}
    if cfg.get("kind") in (None, runs.BACKBONE):
        return Predictor(d.name, runs.EXPORT, [Member(d.name, _weights(1.0), d.name)], {d.name: load_exported(d, device)})
    backbones = {b: load_exported(d / folder, device) for b, folder in cfg["backbones"].items()}
    members = []
    for name, m in cfg["members"].items():
        booster = load_booster(d / m["folder"]) if m["kind"] == runs.BOOSTER else None
        members.append(Member(name, _weights(m["weight"]), m["backbone"], booster))
    return Predictor(cfg.get("name", d.name), cfg["kind"], members, backbones)


def load_predictor(model_dir: str | Path, device: torch.device) -> Predictor:
    """The model in ``model_dir`` with everything it needs loaded; refuses an out-of-date model with the fix."""
    d = Path(model_dir)
    kind = runs.model_kind(d)
    root = d.parent
    if kind == runs.EXPORT:  # a shared model: everything it needs is in its folder
        return _load_export(d, device)
    if kind == runs.BACKBONE:
        members = [Member(d.name, _weights(1.0), d.name)]
    elif kind == runs.BOOSTER:
        members = [_member(root, d.name, 1.0)]
    else:
        from gzpipe.ensemble import load_weights

        members = [_member(root, n, w) for n, w in load_weights(d).items()]
    # What predicting depends on: a booster on its backbone's checkpoint, an ensemble on its members. A backbone's
    # training shards do not matter here (a model moved to another machine predicts without them).
    checked = {d.name} | {m.name for m in members}
    for name in sorted(checked):
        changed = runs.changed_inputs(root / name, labels=lambda lab: lab == "checkpoint" or
                                      lab.endswith("predictions"), missing_ok=True)
        if changed:
            raise GzpipeError(runs.stale_message(root / name, changed, "re-run its stage (gzpipe study re-runs "
                                                 "every stage that is out of date)"))
    backbones = {}
    for b in {m.backbone for m in members}:
        if not runs.is_complete(root / b, runs.BACKBONE):
            raise GzpipeError(f"{d.name} needs the backbone {b} at {root / b}, which is not there (or unfinished)")
        backbones[b] = runs.load_trained(root / b, device)
    return Predictor(d.name, kind, members, backbones)
