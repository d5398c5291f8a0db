"""Which Galaxy Zoo campaign a galaxy-datasets (Zoobot) catalogue's columns belong to.

galaxy-datasets names each vote column ``{question}-{campaign}_{answer}`` (its "ortho" schemas:
``smooth-or-featured-dr5_smooth``), or ``{question}_{answer}`` for a catalogue of one campaign (GZ DESI's, and the
unsuffixed Euclid, Hubble and CANDELS schemas). gzpipe learns GZ2's decision tree (the ``-gz2`` columns, Hart16's and
Kaggle's); the other campaigns ask other questions with other answers (DECaLS's bar is strong / weak / no, its
bulge size has five answers, CANDELS asks about clumps), so their votes are never read as GZ2's. A catalogue of
another campaign is refused naming it; one that mixes GZ2 with others (GZ Evo's) is read for its GZ2 columns, and
its rows that hold no GZ2 vote are rejected with the campaign named (``gzpipe.catalog.read_catalog``).
"""

from __future__ import annotations

import re

# galaxy-datasets' campaign suffixes (galaxy_datasets.shared.label_metadata's *_ortho_pairs) and what they are
CAMPAIGNS = {
    "gz2": "Galaxy Zoo 2 (SDSS)",
    "dr12": "Galaxy Zoo DECaLS DR1/2",
    "dr5": "Galaxy Zoo DECaLS DR5",
    "dr8": "Galaxy Zoo DECaLS DR8",
    "candels": "Galaxy Zoo CANDELS",
    "hubble": "Galaxy Zoo Hubble",
    "euclid": "Galaxy Zoo Euclid",
    "cd": "Galaxy Zoo Cosmic Dawn",
    "jwst": "Galaxy Zoo JWST",
    "ukidss": "Galaxy Zoo UKIDSS",
}
_QUESTION = re.compile(r"^(?P<question>[a-z][a-z0-9-]*?)(?:-(?P<campaign>" + "|".join(CAMPAIGNS) +
                       r"))?_(?P<answer>[a-z0-9-]+?)(?:_fraction)?$")
# questions that only some campaigns ask, to name a catalogue whose columns carry no suffix
_SIGNATURES = (("clumpy-appearance", "Galaxy Zoo CANDELS"), ("clumps-embedded-larger-object", "Galaxy Zoo Hubble"),
               ("clumps", "Galaxy Zoo Euclid or Cosmic Dawn"), ("merging", "Galaxy Zoo DESI (the DECaLS DR8 tree)"),
               ("has-spiral-arms", "a Galaxy Zoo campaign"))


def campaigns_of(columns) -> dict[str, int]:
    """The campaigns whose vote columns a catalogue has: {campaign name: how many columns}. Columns without a
    campaign suffix count under the campaign their questions point to (``_SIGNATURES``)."""
    found: dict[str, int] = {}
    unsuffixed: set[str] = set()
    for c in map(str, columns):
        if c.endswith("_total-votes"):
            continue
        m = _QUESTION.match(c)
        if not m:
            continue
        if m["campaign"]:
            name = CAMPAIGNS[m["campaign"]]
            found[name] = found.get(name, 0) + 1
        elif m["question"] in {q for q, _ in _SIGNATURES} or m["question"] in ("smooth-or-featured", "disk-edge-on",
                                                                              "bar", "bulge-size", "how-rounded"):
            unsuffixed.add(m["question"])
            found.setdefault("_unsuffixed", 0)
            found["_unsuffixed"] += 1
    if "_unsuffixed" in found:
        n = found.pop("_unsuffixed")
        name = next((label for q, label in _SIGNATURES if q in unsuffixed), "a Galaxy Zoo campaign")
        found[f"{name} (columns without a campaign suffix)"] = n
    return found


def describe(found: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n} vote columns)" for name, n in sorted(found.items(), key=lambda kv: -kv[1]))


def others(found: dict[str, int]) -> dict[str, int]:
    """The campaigns other than GZ2."""
    return {k: v for k, v in found.items() if k != CAMPAIGNS["gz2"]}
