"""`gzpipe synth`: an embedded synthetic GZ2 release, so the whole study runs anywhere.

Writes what the real release has: ``images/<asset_id>.jpg`` (424x424 RGB baseline JPEG), ``gz2_hart16.csv``
(Hart16 columns: ``_count``, ``_weight``, ``_fraction``, ``_weighted_fraction``, ``_debiased``, ``_flag`` for all
37 answers) and ``gz2_filename_mapping.csv``; plus ``synth_params.csv`` with the physical truth of each galaxy.
Deterministic for a seed: galaxy ``i`` draws from its own ``SeedSequence(seed, i)``, so output bytes do not depend
on the worker count.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, remove_stale_tmp
from gzpipe.progress import progress_bar
from gzpipe.stopping import worker_map
from gzpipe.synth.params import draw_params
from gzpipe.synth.render import render
from gzpipe.synth.volunteers import vote_counts

OBJID_BASE = 588000000000000000  # SDSS-like 18-digit ids; kept as strings everywhere
ASSET_BASE = 100000


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    n: int = 1000
    seed: int = 0
    quality: int = 90
    workers: int = 1
    nan_rate: float = 0.002  # share of galaxies with one NaN debiased value, as the real table has


def _galaxy(seed: int, i: int, quality: int, nan_rate: float) -> tuple[bytes, dict, dict]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
    p = draw_params(rng)
    img = render(p, rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, progressive=False, optimize=False)
    n_vol = int(rng.integers(25, 60))
    counts = vote_counts(p, rng, n_vol)
    row = _hart16_row(i, p, counts, n_vol, rng, nan_rate)
    return buf.getvalue(), row, {"asset_id": ASSET_BASE + i, **p.as_dict()}


def _hart16_row(i: int, p, counts: dict, n_vol: int, rng: np.random.Generator, nan_rate: float) -> dict:
    row: dict = {
        "dr7objid": str(OBJID_BASE + i),
        "ra": round(float(rng.uniform(0, 360)), 6),
        "dec": round(float(rng.uniform(-10, 70)), 6),
        "rastring": "",
        "decstring": "",
        "sample": "original",
        "gz2_class": "",
        "total_classifications": n_vol,
        "total_votes": int(sum(int(c.sum()) for c in counts.values())),
    }
    nan_col = int(rng.integers(schema.N_TARGETS)) if rng.random() < nan_rate else -1
    for t in schema.ALL_TASKS:
        c = counts[t.name]
        total = int(c.sum())
        frac = c / total if total else np.zeros(len(c))
        # Volunteer weights (GZ2 down-weights inconsistent classifiers): a small multiplicative jitter.
        w = c * rng.uniform(0.85, 1.0, len(c))
        wfrac = w / w.sum() if w.sum() else np.zeros(len(c))
        # Fake redshift debiasing: features fade with z, so the correction boosts "featured" answers.
        boost = 1.0 + 1.5 * p.redshift * (1 if t.name != "t01_smooth_or_features" else np.array([-1, 1, 0]))
        deb = np.clip(wfrac * boost, 0.0, 1.0) if total else np.zeros(len(c))
        for j, col in enumerate(t.columns):
            row[f"{col}_count"] = int(c[j])
            row[f"{col}_weight"] = round(float(w[j]), 3)
            row[f"{col}_fraction"] = round(float(frac[j]), 3)
            row[f"{col}_weighted_fraction"] = round(float(wfrac[j]), 3)
            row[f"{col}_debiased"] = round(float(deb[j]), 3)
            row[f"{col}_flag"] = int(total >= 20 and wfrac[j] > 0.8)
    if nan_col >= 0:
        row[f"{schema.TARGET_NAMES[nan_col]}_debiased"] = float("nan")
    row["gz2_class"] = _gz2_class(p)
    return row


def _gz2_class(p) -> str:
    if p.kind == "star":
        return "A"
    if p.kind == "elliptical":
        return "E" + ("r" if p.axis_ratio > 0.85 else "i" if p.axis_ratio > 0.5 else "c")
    if p.inclination_deg > 76:
        return "Se" + ("r" if p.bulge_to_total > 0.3 else "n")
    bar = "B" if p.bar_strength > 0.3 else ""
    return "S" + bar + "dcba"[min(int(p.bulge_to_total * 5), 3)] + (str(min(p.n_arms, 5)) if p.n_arms else "")


def _remove_extra_images(folder: Path, n: int) -> None:
    """Images of an earlier, larger synth in the same folder (``<ASSET_BASE + i>.jpg`` with i >= n) would sit beside
    a catalogue that no longer names them: remove them. Other files are left alone."""
    for p in folder.glob("*.jpg"):
        if p.stem.isdigit() and int(p.stem) >= ASSET_BASE + n:
            p.unlink()


def synth(cfg: SynthConfig) -> dict:
    """Write a synthetic release to ``cfg.out``; returns a summary. Existing identical files are rewritten
    identically, so re-running after an interruption is safe."""
    if cfg.n < 1:
        raise GzpipeError(f"n must be at least 1, got {cfg.n}")
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out, recursive=True)
    rows, params = [], []
    workers = max(1, min(cfg.workers, os.cpu_count() or 1))
    chunk = max(1, min(64, cfg.n // (4 * workers) or 1))
    jobs = range(cfg.n)
    with progress_bar("synth", total=cfg.n, unit="galaxies") as bar, \
            worker_map(_galaxy, [cfg.seed] * cfg.n, jobs, [cfg.quality] * cfg.n, [cfg.nan_rate] * cfg.n,
                       workers=workers, chunksize=chunk) as results:
        for i, (jpeg, row, par) in enumerate(results):
            with atomic_open(out / "images" / f"{ASSET_BASE + i}.jpg") as f:
                f.write(jpeg)
            rows.append(row)
            params.append(par)
            bar.advance(1)
    _remove_extra_images(out / "images", cfg.n)
    hart = pd.DataFrame(rows)
    mapping = pd.DataFrame(
        {"objid": hart["dr7objid"], "sample": hart["sample"], "asset_id": [ASSET_BASE + i for i in range(cfg.n)]}
    )
    for name, df in (("gz2_hart16.csv", hart), ("gz2_filename_mapping.csv", mapping),
                     ("synth_params.csv", pd.DataFrame(params))):
        with atomic_open(out / name, "w") as f:
            df.to_csv(f, index=False, lineterminator="\n")
    return {"out": str(out), "galaxies": cfg.n, "seed": cfg.seed,
            "images": str(out / "images"), "catalog": str(out / "gz2_hart16.csv"),
            "mapping": str(out / "gz2_filename_mapping.csv")}
