"""A shard folder's previous run: its manifest, and what changed since (catalogue contents, settings, folders),
which decides whether `gzpipe shard` reuses, refuses or (with --force) rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

from gzpipe import rerun
from gzpipe.fileio import sha256_file
from gzpipe.manifest import MANIFEST
from gzpipe.shard.config import SETTINGS, ShardConfig


def sources(cfg: ShardConfig) -> dict:
    """The catalogue(s) and mapping by content (sha256) and absolute path, and the image folder's absolute path
    (one catalogue: ``catalog`` and ``images``; several: ``catalogs``, each with its ``images``)."""
    def one(p) -> dict:
        return {"path": str(Path(p).resolve()), "sha256": sha256_file(p)}

    def folder(p) -> str | None:
        return str(Path(p).resolve()) if p is not None else None

    srcs = cfg.sources()
    if len(srcs) == 1:
        rec = {"catalog": one(srcs[0].catalog)}
    else:
        rec = {"catalogs": [{**one(s.catalog), "images": folder(s.images)} for s in srcs]}
    if cfg.mapping:
        rec["mapping"] = one(cfg.mapping)
    if len(srcs) == 1:
        rec["images"] = {"path": folder(srcs[0].images)}
    return rec


def read_prior(out: Path) -> dict | None:
    """The manifest of a finished shard folder, or None: one whose run passed its own checks (something written,
    no more rejected than its --max-rejected; a failed run's manifest stays for inspection but is not finished)."""
    try:
        m = json.loads((out / MANIFEST).read_text())
        c = m["counts"]
        ok = c["written"] > 0 and c["rejected"] <= m["config"].get("max_rejected", 0.1) * c["inputs"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return m if ok else None


def changed_sources(prior: dict, now: dict) -> list[str]:
    """The catalogue or mapping whose contents changed since the folder was written (older manifests record
    none: nothing to compare)."""
    out = []
    old_all = prior.get("sources") or {}
    for k in ("catalog", "mapping"):
        old = old_all.get(k)
        if old is None or k not in now:
            continue
        if old.get("sha256") != now[k]["sha256"]:
            out.append(f"the {'catalogue' if k == 'catalog' else k} ({now[k]['path']}) has changed")
    for old, new in zip(old_all.get("catalogs") or [], now.get("catalogs") or []):
        if old.get("path") == new["path"] and old.get("sha256") != new["sha256"]:
            out.append(f"the catalogue ({new['path']}) has changed")
    return out


def settings_diff(prior: dict, cfg: ShardConfig, sources: dict) -> list[str]:
    now = {k: getattr(cfg, k) for k in SETTINGS}
    diff = rerun.differences(prior["config"], now, SETTINGS)
    if prior.get("images_dir") and "images" in sources and prior["images_dir"] != sources["images"]["path"]:
        diff.append(f"images {prior['images_dir']} -> {sources['images']['path']}")
    old_cats = [(c["path"], c.get("images")) for c in (prior.get("sources") or {}).get("catalogs") or []] or \
        [((prior.get("sources") or {}).get("catalog", {}).get("path"), prior.get("images_dir"))]
    new_cats = [(c["path"], c["images"]) for c in sources.get("catalogs") or []] or \
        [(sources["catalog"]["path"], sources["images"]["path"])]
    if [c for c, _ in old_cats] != [c for c, _ in new_cats] and old_cats[0][0] is not None:
        diff.append(f"catalogues {', '.join(Path(c).name for c, _ in old_cats)} -> "
                    f"{', '.join(Path(c).name for c, _ in new_cats)}")
    had_mapping = bool(prior["config"].get("mapping"))
    if had_mapping != bool(cfg.mapping):
        diff.append(f"mapping {'given' if had_mapping else 'none'} -> {'given' if cfg.mapping else 'none'}")
    return diff


def out_of_date(cfg: ShardConfig) -> list[str]:
    """What changed in the catalogue or mapping since a finished folder at ``cfg.out`` was written ([] if none)."""
    prior = read_prior(Path(cfg.out))
    return changed_sources(prior, sources(cfg)) if prior is not None else []
