"""`gzpipe shard`: catalogue + images -> WebDataset tars, DALI indexes and ``manifest.json``.

Stream of work:
  catalogue rows -> (fraction) inputs -> row checks (reader reasons, duplicate ids) -> split by id hash
  -> per split, shuffled by id hash -> planned shards of ``shard_size`` -> per shard (in worker processes):
  read + check each JPEG, write the tar and its index atomically, record a done-file (``gzpipe.shard.jobs``).
Every input row ends as written or rejected-with-a-reason; the manifest lists both.

Each sample holds ``<key>.jpg``, ``<key>.targets`` (30 little-endian float32; masked targets stored as 0),
``<key>.mask`` (30 uint8, 1 = valid) and ``<key>.json`` (id, catalogue row, metadata).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import __version__, rerun, schema
from gzpipe.catalog import mask_array, target_array
from gzpipe.errors import GzpipeError
from gzpipe.fileio import (atomic_open, finish_swap, remove_folder_if_empty, remove_stale_tmp, staging_dir, swap_in,
                           sync_folder, write_json)
from gzpipe.rerun import stale_line
from gzpipe.manifest import LABELS, MANIFEST
from gzpipe.shard.jobs import DONE_DIR, MANIFEST_VERSION, Job, Rejection, execute
from gzpipe.shard.config import ShardConfig
from gzpipe.shard.prior import changed_sources, read_prior, settings_diff
from gzpipe.shard.prior import sources as shard_sources
from gzpipe.shard.splits import SPLITS, assign_splits, in_fraction, write_order
from gzpipe.shard.tarwrite import ShardInfo
from gzpipe.union import DUPLICATE_COLUMN, disagreeing_line, read_catalogs, row_difference

_SHARD_RE = re.compile(r"^(train|val|test)-\d{6}\.(tar|idx)$")


# manifest entries that say more about the data without changing the shards; a shard set finished before they
# existed keeps its manifest without them (`--force` rebuilds it with them)
ADDED_LATER = ("duplicate_labels", "duplicates_disagree", "random_draw")


def key_for(galaxy_id: str) -> str:
    """A WebDataset key: no dots (they separate key from extension) and no path characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", galaxy_id)


def run_shard(cfg: ShardConfig, force_hint: str = "--force") -> dict:
    """Pack the catalogue into shards; returns the manifest (also written to ``out/manifest.json``), with a
    ``run`` entry (not written) counting the shards reused and written.

    Re-runs follow ``gzpipe.rerun``: with the same settings, finished shards are reused (each checked against its
    recorded sha256; a missing or damaged one is rewritten); with other settings a finished folder is kept and the
    run skipped (``force_hint`` names the flag that replaces it), unless ``force``, which builds the new folder beside it and swaps it in when complete."""
    cfg.validate()
    out = Path(cfg.out)
    finish_swap(out)
    existed = out.exists()
    prior = read_prior(out) if existed else None
    table = read_catalogs(cfg.sources(), cfg.workers)
    cfg = replace(cfg, target=table.attrs["target_kind"])  # recorded as the kind the data is
    _say_absent(table)
    sources = shard_sources(cfg)
    build = out
    if prior is not None and not cfg.force:
        changed = changed_sources(prior, sources)
        if changed:
            raise GzpipeError(stale_line(str(out), changed, f"{force_hint} rebuilds the shards (beside the old "
                                         "ones, swapped in when complete)"))
        diff = settings_diff(prior, cfg, sources)
        if diff:
            rerun.say(rerun.finished_line("shards", out, diff, force_hint))
            return {**prior, "run": {"skipped": True, "shards_reused": 0, "shards_written": 0}}
    elif prior is not None:
        build = staging_dir(out)
        rerun.say(rerun.replacing_line("shards", build, out))
    try:
        manifest, reused = _write(cfg, table, sources, build, prior if build == out else None)
    except BaseException:
        if not existed:
            _remove_if_unused(out)  # a failed first run leaves no empty folder
        raise
    if build != out:
        swap_in(build, out)
    total = len(manifest["shards"])
    if reused:
        what = "finished with these settings" if prior is not None and build == out else "resuming the interrupted run"
        rerun.say(f"shards: {what} in {out}: {reused} of {total} shards reused (sha256 checked), "
                  f"{total - reused} written")
    return {**manifest, "run": {"skipped": False, "shards_reused": reused, "shards_written": total - reused}}


def _say_absent(table: pd.DataFrame) -> None:
    """One line per catalogue that lacks some of the questions: they are masked for its galaxies; and one per pair
    of catalogues whose shared galaxies' labels disagree."""
    from gzpipe.union import disagreement_lines

    for line in disagreement_lines(table.attrs.get("duplicate_labels", [])):
        rerun.say(line)
    for c in table.attrs.get("catalogs", []):
        if c.get("other_campaigns"):
            rerun.say(f"note: {Path(c['path']).name} mixes Galaxy Zoo campaigns: gzpipe reads its GZ2 columns and "
                      f"not the others' ({', '.join(c['other_campaigns'])}: other questions and answers); a row with no "
                      "GZ2 vote is rejected as no_labels, never written as a galaxy with every target masked")
        if c.get("empty_answers"):
            e = c["empty_answers"]
            rerun.say(f"note: {Path(c['path']).name}: {sum(e.values())} question(s) of its galaxies have an answer left "
                      f"empty ({', '.join(f'{t} {n}' for t, n in e.items())}): each such question is masked for that "
                      "galaxy, its other answers not read as the question's fractions (catalogs[].empty_answers in "
                      "the manifest)")
        if c["tasks_absent"]:
            n = len(c["tasks_absent"])
            rerun.say(f"note: {Path(c['path']).name} has no labels for {n} of {len(schema.TASKS)} questions "
                      f"({', '.join(c['tasks_absent'])}): masked for its {c['rows']} galaxies, never read as answers "
                      "(--all-questions makes this an error)")


def _remove_if_unused(out: Path) -> None:
    """Remove a folder this run created when nothing in it can be resumed (no finished shard)."""
    done = out / DONE_DIR
    if done.is_dir() and not any(done.iterdir()):
        remove_folder_if_empty(done)
    remove_folder_if_empty(out)


def _write(cfg: ShardConfig, table: pd.DataFrame, sources: dict, out: Path, prior: dict | None) -> tuple[dict, int]:
    """Plan and write every shard into ``out``, reusing the finished ones; returns (manifest, shards reused)."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    remove_stale_tmp(out / DONE_DIR)
    n_rows = len(table)
    ids = table["id"].astype(str).tolist()
    in_frac = in_fraction(ids, cfg.seed, cfg.fraction) if cfg.fraction < 1 else np.ones(n_rows, dtype=bool)
    if cfg.train_fraction < 1:  # by id hash too (a larger share keeps a superset); val and test stay whole
        split = assign_splits(ids, cfg.seed, cfg.val, cfg.test)
        in_frac &= (split != "train") | in_fraction(ids, cfg.seed + 1, cfg.train_fraction)
    dup = (table[DUPLICATE_COLUMN] != "").to_numpy() if DUPLICATE_COLUMN in table else np.zeros(n_rows, bool)
    keep = in_frac & ~dup  # a galaxy in two catalogues is used once (from the first); the others are listed
    keys = keys_for(table["id"])
    rejected = _row_rejections(table, keep, keys)
    bad_rows = {r.row for r in rejected}
    good = [i for i in range(n_rows) if keep[i] and i not in bad_rows]
    jobs = _plan(table, good, cfg, keys)
    infos, image_rejections, converted, reused = execute(jobs, out, cfg.workers)
    sync_folder(out)  # the shards are on disk before the manifest that vouches for them
    rejected += image_rejections
    rejected.sort(key=lambda r: r.row)
    _remove_stale_shards(out, {j.name for j in jobs})
    manifest = _manifest(cfg, table, in_frac, keep, infos, rejected, converted, sources)
    if prior is not None:
        # The same settings: the manifest keeps the recorded config and sources (paths as first given, the workers
        # and max_rejected of then), so a re-run from another folder or with other workers leaves it byte-identical;
        # every model trained on these shards records the manifest's sha256 and would read as out of date.
        manifest["config"] = prior["config"]
        manifest["sources"] = prior.get("sources", manifest["sources"])
        for key in ADDED_LATER:  # information a later gzpipe records: not added to a finished set, for the same reason
            if key not in prior:
                manifest.pop(key, None)
        if "duplicates_disagree" not in prior:  # nor the label differences within its lists' entries
            manifest["duplicates"], manifest["rejected"] = prior.get("duplicates", []), prior.get("rejected", [])
    _write_labels(out, jobs, {(r.row) for r in rejected})
    write_json(out / MANIFEST, manifest)
    line = disagreeing_line([e["labels"] for e in manifest["duplicates"] + manifest["rejected"] if e.get("labels")])
    if line:
        rerun.say(line)
    _check_rejections(manifest, cfg, out)
    _note_empty_splits(manifest["counts"]["per_split"], cfg)
    return manifest, reused


def _note_empty_splits(per_split: dict, cfg: ShardConfig) -> None:
    """`gzpipe train` fits on train, early-stops on val and scores on test, so it needs a galaxy in each. Splits go by
    id hash, and a small catalogue can leave one empty whatever --val / --test say: a note now, naming the fix, rather
    than a surprise at training ("split 'val' has no galaxies"). Not an error: such shards still serve `predict`,
    `verify` and inspection."""
    empty = [s for s in SPLITS if per_split.get(s, 0) == 0]
    if not empty or sum(per_split.values()) == 0:
        return  # nothing written at all: _check_rejections names the reasons
    share = {"train": 1 - cfg.val - cfg.test, "val": cfg.val, "test": cfg.test}
    fix = {"train": "a larger --train-fraction or a smaller --val / --test", "val": "a larger --val",
           "test": "a larger --test"}
    rerun.say(f"note: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} hold{'' if len(empty) > 1 else 's'}"
              f" no galaxies ({', '.join(f'{s} {per_split.get(s, 0)}' for s in SPLITS)}; "
              f"{', '.join(f'{s} share {share[s]:g}' for s in empty)}): splits go by a hash of each id, so a catalogue "
              f"this small can leave one empty, and `gzpipe train` needs all three; give more galaxies or "
              f"{' / '.join(fix[s] for s in empty)}")


def _check_rejections(m: dict, cfg: ShardConfig, out: Path) -> None:
    """Nothing written, or more than ``max_rejected`` of the inputs rejected, is an error that names the main
    reasons (the manifest, with every rejected row, stays for inspection)."""
    c = m["counts"]
    if c["inputs"] == 0:
        raise GzpipeError(f"no catalogue row was kept (fraction {cfg.fraction} of {c['catalog_rows']} rows)")
    share = c["rejected"] / c["inputs"]
    if c["written"] and share <= cfg.max_rejected:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(m["rejected_by_reason"].items(), key=lambda kv: -kv[1])[:3])
    example = m["rejected"][0]["reason"] if m["rejected"] else ""
    example = example if len(example) <= 240 else example[:239] + "…"
    hint = _rejection_hint(m["rejected_by_reason"], cfg)
    what = "no galaxy was written" if not c["written"] else (f"{share:.0%} of the rows were rejected (more than "
                                                             f"--max-rejected {cfg.max_rejected:g})")
    raise GzpipeError(f"{what}: {c['rejected']} of {c['inputs']} rejected ({reasons}; e.g. {example}){hint}; "
                      f"every rejected row and its reason is in {out / MANIFEST}")


def _rejection_hint(by_reason: dict, cfg: ShardConfig) -> str:
    top = max(by_reason, key=by_reason.get) if by_reason else ""
    if top == "missing_image":
        return (f"; is --images {cfg.images} the folder of the images?" if cfg.images is not None else
                "; are the catalogue's file_loc paths right (relative ones start from the catalogue's folder "
                "without --images)?")
    if top == "out_of_range":
        return "; are the fractions given in percent? gzpipe expects 0 to 1"
    if top == "no_labels":
        n = by_reason["no_labels"]
        return (f"; {n} rows hold no GZ2 vote (in a catalogue that mixes campaigns, their votes are another "
                f"campaign's): to shard the GZ2 rows alone, give --max-rejected above their share")
    if top == "not_fractions":
        return (f"; are these the vote fractions of each question (--target picks Hart16's column family; debiased "
                f"ones need not sum to 1)? --sum-tolerance {cfg.sum_tolerance:g} sets how far from 1 a sum may be")
    if top == "no_mapping":
        return "; is --mapping the gz2_filename_mapping.csv of this release?"
    return ""


def _write_labels(out: Path, jobs: list[Job], rejected_rows: set[int]) -> None:
    """``labels.parquet``: id, split, 30 targets, 30 masks of every written sample, in write order - what the
    ensemble and report stages need without reading JPEGs back."""
    ids, splits, ys, ms, cats = [], [], [], [], []
    for j in jobs:
        keep = [k for k, r in enumerate(j.rows) if r not in rejected_rows]
        of = j.meta_values[j.meta_cols.index("catalog")] if "catalog" in j.meta_cols else None
        cats += [int(of[k]) if of is not None else 0 for k in keep]
        ids += [j.ids[k] for k in keep]
        splits += [j.split] * len(keep)
        ys.append(j.targets[keep])
        ms.append(j.masks[keep])
    y = np.concatenate(ys) if ys else np.zeros((0, schema.N_TARGETS), np.float32)
    m = np.concatenate(ms) if ms else np.zeros((0, schema.N_TARGETS), np.uint8)
    df = pd.concat([pd.DataFrame({"id": ids, "split": splits, "catalog": np.array(cats, np.int16)}),
                    pd.DataFrame(y.astype(np.float32), columns=list(schema.TARGET_NAMES)),
                    pd.DataFrame(m.astype(bool), columns=[f"mask:{n}" for n in schema.TARGET_NAMES])], axis=1)
    with atomic_open(out / LABELS, "wb") as f:
        df.to_parquet(f, index=False)


def keys_for(ids: pd.Series) -> np.ndarray:
    """``key_for`` of a whole column at once."""
    return ids.astype(str).str.replace(r"[^A-Za-z0-9_-]", "_", regex=True).to_numpy(dtype=object)


def _row_rejections(table: pd.DataFrame, keep: np.ndarray, keys: np.ndarray) -> list[Rejection]:
    """Rows the reader gave a reason, and rows whose key repeats an earlier kept row's (vectorised: the per-row
    work is for the rejected rows only)."""
    ids = table["id"].astype(str).to_numpy(dtype=object)
    reasons = table["reject"].to_numpy(dtype=object)
    has_reason = keep & (reasons != "")
    candidates = np.flatnonzero(keep & ~has_reason)
    dup = pd.Series(keys[candidates]).duplicated(keep="first").to_numpy()
    first_row = {}
    for i in candidates[~dup]:
        if keys[i] not in first_row:
            first_row[keys[i]] = int(i)
    out = []
    for i in np.flatnonzero(has_reason):
        reason = reasons[i]
        code = ("no_mapping" if "mapping" in reason else "out_of_range" if "outside" in reason or "exceeds" in reason
                else "not_fractions" if "sum to" in reason else "no_labels" if "no GZ2 vote" in reason else "bad_row")
        out.append(Rejection(int(i), ids[i], reason, code))
    for i in candidates[dup]:
        out.append(Rejection(int(i), ids[i], f"duplicate id {ids[i]!r} (first seen on catalogue row "
                                              f"{first_row[keys[i]]})", "duplicate_id",
                             row_difference(table, int(i), first_row[keys[i]])))
    return sorted(out, key=lambda r: r.row)


def _plan(table: pd.DataFrame, good: list[int], cfg: ShardConfig, keys: np.ndarray) -> list[Job]:
    ids = table["id"].astype(str).to_numpy(dtype=object)
    targets = np.nan_to_num(target_array(table), nan=0.0)  # masked targets stored as 0; the mask says so
    masks = mask_array(table)
    split = assign_splits(list(ids), cfg.seed, cfg.val, cfg.test)
    meta_cols = [c for c in table.columns if c not in ("id", "path", "reject")
                 and c not in schema.TARGET_NAMES and not c.startswith("mask:")]
    jobs: list[Job] = []
    good_arr = np.array(good, dtype=np.int64)
    columns = [table[c].to_numpy() for c in meta_cols]
    paths = table["path"].to_numpy()
    for s in SPLITS:
        rows = good_arr[split[good_arr] == s] if len(good_arr) else good_arr
        rows = rows[write_order(list(ids[rows]), cfg.seed)] if len(rows) else rows
        for k in range(math.ceil(len(rows) / cfg.shard_size)):
            r = rows[k * cfg.shard_size : (k + 1) * cfg.shard_size]
            gids = [str(i) for i in ids[r]]
            jobs.append(Job(f"{s}-{k:06d}.tar", s, r.tolist(), keys[r].tolist(), paths[r].tolist(),
                             targets[r], masks[r], gids, meta_cols, [c[r].tolist() for c in columns],
                             resize=cfg.resize, quality=cfg.quality, verify=cfg.verify,
                             stretch=cfg.stretch))
    return jobs


def _remove_stale_shards(out: Path, planned: set[str]) -> None:
    """Shards of an earlier, different run in this folder would be read as data: remove them."""
    planned_all = planned | {n.replace(".tar", ".idx") for n in planned}
    for p in out.iterdir():
        if _SHARD_RE.match(p.name) and p.name not in planned_all:
            p.unlink()
            (out / DONE_DIR / f"{p.name}.json").unlink(missing_ok=True)


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _where(table: pd.DataFrame, row: int) -> dict:
    """The catalogue and its row, for a row of a table over several catalogues."""
    if "catalog" not in table:
        return {}
    return {"catalog": int(table["catalog"].iat[row]), "catalog_row": int(table["catalog_row"].iat[row])}


def _manifest(cfg: ShardConfig, table: pd.DataFrame, in_frac: np.ndarray, keep: np.ndarray, infos: list[ShardInfo],
              rejected: list[Rejection], converted: list[Rejection], sources: dict) -> dict:
    written = sum(i.samples for i in infos)
    inputs = int(keep.sum())
    assert inputs == written + len(rejected), "every input row must be written or rejected"
    per_split = {s: sum(i.samples for i in infos if i.split == s) for s in SPLITS}
    config = {k: _plain(v) for k, v in asdict(cfg).items() if k != "force"}
    duplicates = np.flatnonzero(in_frac & ~keep)
    catalogs = table.attrs.get("catalogs") or []
    bad = np.zeros(len(table), bool)
    bad[[r.row for r in rejected]] = True
    of = table.attrs.get("duplicate_rows") or []
    dup_entries = []
    for i in duplicates:
        diff = row_difference(table, int(i), of[i]) if i < len(of) and of[i] >= 0 else None
        dup_entries.append({"row": int(i), **_where(table, int(i)), "id": str(table["id"].iat[i]),
                            "same_as": table[DUPLICATE_COLUMN].iat[i], **({"labels": diff} if diff else {})})
    disagree = [e["labels"] for e in dup_entries if "labels" in e] + [r.labels for r in rejected if r.labels]
    for k, c in enumerate(catalogs):  # every row of every catalogue: left out, a duplicate, rejected or written
        rows = (table["catalog"] == k).to_numpy() if "catalog" in table else np.ones(len(table), bool)
        c.update(excluded_by_fraction=int((rows & ~in_frac).sum()), duplicates=int((rows & in_frac & ~keep).sum()),
                 rejected=int((rows & bad).sum()), written=int((rows & keep & ~bad).sum()))
    return {
        "format_version": MANIFEST_VERSION,
        "created_by": f"gzpipe {__version__}",
        "target": {
            "kind": table.attrs.get("target_kind", cfg.target),
            "names": list(schema.TARGET_NAMES),
            "tasks": {t.name: [schema.TASK_SLICES[t.name].start, schema.TASK_SLICES[t.name].stop]
                      for t in schema.TASKS},
            "encoding": "targets: 30 x float32 little-endian (masked entries stored as 0); "
                        "mask: 30 x uint8, 1 = valid target",
        },
        "sample": {"jpg": "JPEG bytes", "targets": "<f4[30]", "mask": "u1[30]", "json": "id, row, metadata"},
        "images_dir": (sources.get("images") or {}).get("path"),  # several catalogues: each one's, in sources
        "stored_size": cfg.resize or "original",
        "counts": {
            "catalog_rows": len(table),
            "excluded_by_fraction": int(len(table) - in_frac.sum()),
            "duplicates": len(duplicates),
            "inputs": inputs,
            "written": written,
            "rejected": len(rejected),
            "converted": len(converted),
            "per_split": per_split,
        },
        "rejected_by_reason": dict(sorted(Counter(r.code for r in rejected).items())),
        "shards": [asdict(i) for i in infos],
        "rejected": [{"row": r.row, **_where(table, r.row), "id": r.id, "reason": r.reason,
                      **({"labels": r.labels} if r.labels else {})} for r in rejected],
        "duplicates": dup_entries,
        "duplicates_disagree": len(disagree),
        "catalogs": catalogs,
        "duplicate_labels": table.attrs.get("duplicate_labels", []),
        "tasks_absent": list(table.attrs.get("tasks_absent", [])),
        **({"random_draw": cfg.random_draw_indices()} if cfg.random_draw else {}),
        "converted": [{"row": r.row, "id": r.id, "reason": r.reason} for r in sorted(converted, key=lambda r: r.row)],
        "config": config,
        "sources": sources,
    }
