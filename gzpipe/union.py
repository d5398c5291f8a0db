"""Several catalogues as one table: what `gzpipe shard --catalog A --catalog B ...` packs into one shard set.

Why one shard set rather than training over several shard folders: the split is decided once, by a hash of each
galaxy's id over the union, so a galaxy in two catalogues lands in one split only and is stored once; the loaders,
the manifest (which accounts for every row of every catalogue) and every stage downstream stay as they are.

* Each catalogue is read by ``gzpipe.catalog.read_catalog`` (its own format, its own absent questions).
* Their kinds of fraction must agree (Hart16 ``debiased`` and Kaggle's weighted fractions do not mix).
* Ids: catalogues of one id family (all Kaggle ``GalaxyID``, all Hart16 ``asset_id``) keep their ids; when the
  families differ, every id is prefixed with its format (``kaggle:100008``, ``hart16:130549``), since the same
  number names different galaxies in the two.
* A galaxy in two catalogues is used once, from the first catalogue given: by id within an id family, and across
  families by its pixels (a hash of each image decoded at 1/8 scale: Kaggle's JPEGs are GZ2's images re-encoded,
  pixel-identical but not byte-identical). The later rows are listed, with the row they repeat, as duplicates.
* The labels of those pairs are compared question by question (``attrs["duplicate_labels"]``, the manifest's
  ``duplicate_labels``): two catalogues of one kind of fraction can still disagree about the same galaxy. On the
  real data the Hart16 sample's weighted fractions call the 39 galaxies it shares with Kaggle's files smoother than
  Kaggle does (smooth by 0.19 on average; the other questions agree within 0.01-0.05), which a model of the union
  learns as a mix.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gzpipe import schema

from gzpipe.catalog import CatalogSource, format_of, read_catalog
from gzpipe.errors import CatalogError

DUPLICATE_COLUMN = "duplicate_of"


def read_catalogs(sources: list[CatalogSource], workers: int = 1) -> pd.DataFrame:
    """One table over ``sources`` (see the module docstring), with ``catalog`` (index into ``sources``),
    ``catalog_row`` and ``duplicate_of`` ("" or what the row repeats) columns where there are several; its
    ``attrs["catalogs"]`` describe each one (path, format, kind, rows, absent questions, duplicates)."""
    if len(sources) > 1:  # --target picks the Hart16 family; the other formats hold one kind each
        sources = [s if format_of(s) == "hart16" else replace(s, target=None) for s in sources]
    tables = [read_catalog(s) for s in sources]
    infos = [{"path": str(s.catalog), "format": t.attrs["format"], "target_kind": t.attrs["target_kind"],
              "rows": len(t), "tasks_absent": list(t.attrs.get("tasks_absent", [])),
              **({"empty_answers": t.attrs["empty_answers"]} if t.attrs.get("empty_answers") else {}),
              **({"other_campaigns": t.attrs["other_campaigns"]} if t.attrs.get("other_campaigns") else {})}
             for s, t in zip(sources, tables)]
    if len(tables) == 1:
        table = tables[0]
        table.attrs["catalogs"] = infos
        return table
    _check_kinds(infos)
    families = {i["format"] for i in infos}
    parts = []
    for k, (t, info) in enumerate(zip(tables, infos)):
        t = t.copy()
        if len(families) > 1:
            t["id"] = [f"{info['format']}:{i}" if i else "" for i in t["id"]]
        t.insert(2, "catalog", k)
        t.insert(3, "catalog_row", range(len(t)))
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    table[DUPLICATE_COLUMN], of = _duplicates(table, cross_family=len(families) > 1, workers=workers, infos=infos)
    for k, info in enumerate(infos):
        info["duplicates"] = int(((table["catalog"] == k) & (table[DUPLICATE_COLUMN] != "")).sum())
    table.attrs.update(target_kind=infos[0]["target_kind"], format="+".join(i["format"] for i in infos),
                       catalogs=infos, duplicate_labels=label_agreement(table, of, infos), duplicate_rows=of,
                       tasks_absent=sorted(set.intersection(*(set(i["tasks_absent"]) for i in infos))))
    return table


def _check_kinds(infos: list[dict]) -> None:
    first = infos[0]
    for other in infos[1:]:
        if other["target_kind"] != first["target_kind"]:
            fix = ""
            hart = [i for i in (first, other) if i["format"] == "hart16"]
            fixed = [i for i in (first, other) if i["format"] != "hart16"]
            if hart and fixed:
                fix = f"; give --target {fixed[0]['target_kind']} for the Hart16 catalogue"
            raise CatalogError(f"{first['path']} holds {first['target_kind']} fractions ({first['format']}) and "
                               f"{other['path']} {other['target_kind']} ({other['format']}): a model cannot learn "
                               f"both kinds as one target{fix}")


def _duplicates(table: pd.DataFrame, cross_family: bool, workers: int,
                infos: list[dict]) -> tuple[list[str], list[int]]:
    """Per row, "" or the earlier catalogue's row it repeats (same id; across id families, the same pixels), and
    that row's index (-1 for none)."""
    out = [""] * len(table)
    of = [-1] * len(table)
    first: dict[str, int] = {}
    usable = (table["reject"] == "").to_numpy() & (table["id"] != "").to_numpy()
    ids, cats = table["id"].to_numpy(), table["catalog"].to_numpy()
    for i in range(len(table)):
        if not usable[i]:
            continue
        j = first.setdefault(ids[i], i)
        if j != i and cats[j] != cats[i]:
            out[i], of[i] = _describe(table, j, infos, "the same id"), j
    if cross_family:
        rows = [i for i in range(len(table)) if usable[i] and not out[i]]
        with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow decodes without the GIL
            prints = list(pool.map(image_fingerprint, table["path"].to_numpy()[rows], chunksize=64))
        seen: dict[str, int] = {}
        for i, fp in zip(rows, prints):
            if not fp:
                continue
            j = seen.setdefault(fp, i)
            if j != i and cats[j] != cats[i]:
                out[i], of[i] = _describe(table, j, infos, "the same pixels"), j
    return out, of


def label_agreement(table: pd.DataFrame, of: list[int], infos: list[dict]) -> list[dict]:
    """For each pair of catalogue formats that share galaxies (the later one's duplicates of the kept one's rows):
    per question both label, how many shared galaxies, the mean absolute difference of their answers' fractions,
    and each answer's mean difference (later minus kept). A catalogue pair with no shared labelled question is
    left out."""
    pairs = [(i, j) for i, j in enumerate(of) if j >= 0]
    if not pairs:
        return []
    y = table[list(schema.TARGET_NAMES)].to_numpy(np.float64)
    m = table[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy(bool)
    fmt = [infos[k]["format"] for k in table["catalog"].to_numpy()]
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, j in pairs:
        groups.setdefault((fmt[i], fmt[j]), []).append((i, j))
    out = []
    for (later, kept), ij in groups.items():
        a, b = np.array([i for i, _ in ij]), np.array([j for _, j in ij])
        tasks = {}
        for t, s in schema.TASK_SLICES.items():
            both = m[a, s].all(axis=1) & m[b, s].all(axis=1)
            if not both.any():
                continue
            d = y[a[both], s] - y[b[both], s]
            names = list(schema.TARGET_NAMES)[s]
            tasks[t] = {"galaxies": int(both.sum()), "mean_abs_diff": round(float(np.abs(d).mean()), 4),
                        "mean_diff": {n: round(float(v), 4) for n, v in zip(names, d.mean(axis=0))}}
        if tasks:
            out.append({"later": later, "kept": kept, "galaxies": len(ij), "tasks": tasks})
    return out


def row_difference(table: pd.DataFrame, i: int, j: int, tolerance: float = 1e-6) -> dict | None:
    """How row ``i``'s labels differ from row ``j``'s (the row kept for the same galaxy), over the targets both
    label: None when they agree (within ``tolerance``), else the largest absolute difference and the questions that
    differ (and the questions one of them labels and the other does not)."""
    names = list(schema.TARGET_NAMES)
    y = table[names].to_numpy(np.float64)[[i, j]]
    m = table[[f"mask:{n}" for n in names]].to_numpy(bool)[[i, j]]
    both = m[0] & m[1]
    d = np.where(both, np.abs(y[0] - y[1]), 0.0)
    tasks = [t for t, s in schema.TASK_SLICES.items() if d[s].max() > tolerance or (m[0, s] != m[1, s]).any()]
    if not tasks:
        return None
    return {"max_abs_diff": round(float(d.max()), 4), "questions": tasks}


def disagreeing_line(differences: list[dict]) -> str | None:
    """One line on the duplicate rows whose labels differ from the kept row's (``row_difference`` of each)."""
    if not differences:
        return None
    worst = max(d["max_abs_diff"] for d in differences)
    tasks: dict[str, int] = {}
    for d in differences:
        for t in d["questions"]:
            tasks[t] = tasks.get(t, 0) + 1
    shown = ", ".join(f"{t} {n}" for t, n in sorted(tasks.items(), key=lambda kv: -kv[1])[:4])
    return (f"note: {len(differences)} duplicate row(s) label their galaxy differently from the row kept (by up to "
            f"{worst:.2f}; {shown}): the first row's labels are used; each is in the manifest with its difference "
            "(duplicates[].labels, rejected[].labels)")


DISAGREE = 0.05  # a question's mean absolute difference over the shared galaxies above which shard says so


def disagreement_lines(agreement: list[dict]) -> list[str]:
    """One line per pair of catalogue formats whose shared galaxies' labels disagree by more than ``DISAGREE`` on
    some question: the worst question, its answer that moves most, and what is kept."""
    lines = []
    for g in agreement:
        worst = max(g["tasks"].items(), key=lambda kv: kv[1]["mean_abs_diff"])
        if worst[1]["mean_abs_diff"] <= DISAGREE:
            continue
        answer, diff = max(worst[1]["mean_diff"].items(), key=lambda kv: abs(kv[1]))
        label = g["later"] if g["later"] != g["kept"] else f"the later {g['later']} catalogue"
        over = "" if worst[1]["galaxies"] == g["galaxies"] else f" over the {worst[1]['galaxies']} both label"
        lines.append(f"note: {g['galaxies']} galaxies are in both a {g['kept']} and a {g['later']} catalogue and "
                     f"their labels disagree: {worst[0]} by {worst[1]['mean_abs_diff']:.2f} on average{over} "
                     f"({answer}: {label} {diff:+.2f}); the {g['kept']} labels are kept, and a model of the union "
                     "learns both conventions (per question: the manifest's duplicate_labels)")
    return lines


def _describe(table: pd.DataFrame, j: int, infos: list[dict], how: str) -> str:
    return (f"{how} as {table['id'].iat[j]} (row {table['catalog_row'].iat[j]} of "
            f"{Path(infos[table['catalog'].iat[j]]['path']).name})")


def image_fingerprint(path: str | bytes) -> str:
    """A hash of the image decoded at 1/8 scale (JPEG DCT scaling: about 1 ms; other formats made 8-bit RGB as
    `shard` makes them, then reduced 8x), "" when it cannot be read (the shard stage then rejects it with the
    reason)."""
    try:
        if isinstance(path, (bytes, bytearray)):
            data = bytes(path)
        else:
            from gzpipe.shard.images import read_image

            data = read_image(path)[0]
        if data[:3] == b"\xff\xd8\xff":
            im = Image.open(io.BytesIO(data))
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            rgb = im.convert("RGB")
        else:
            from gzpipe.pixels import decode

            rgb = Image.fromarray(decode(data)[0]).reduce(8)
        return hashlib.sha1(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()
    except Exception:  # noqa: BLE001 - any unreadable image: no fingerprint, the shard stage says why
        return ""


def sources_of(catalogs: list[Path], images: list[Path | None], **common) -> list[CatalogSource]:
    """One ``CatalogSource`` per catalogue: ``images`` is one folder for all of them, or one per catalogue in order."""
    if len(images) not in (0, 1, len(catalogs)):
        raise CatalogError(f"{len(catalogs)} catalogues and {len(images)} --images folders: give one --images for "
                           "all of them, or one per --catalog in the same order")
    folders = images if len(images) == len(catalogs) else [images[0] if images else None] * len(catalogs)
    base = CatalogSource(Path(catalogs[0]), None, **common)
    return [replace(base, catalog=Path(c), images=Path(i) if i is not None else None)
            for c, i in zip(catalogs, folders)]
