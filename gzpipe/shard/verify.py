"""`gzpipe verify SHARDS`: check every shard and index against the manifest, after copies, long storage or a
crash. Names each damaged file and the `gzpipe shard` command that rebuilds just those (the others are reused)."""

from __future__ import annotations

import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from gzpipe.fileio import sha256_file
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP
from gzpipe.manifest import read_manifest


@dataclass
class ShardCheck:
    name: str
    ok: bool
    problem: str = ""
    samples: int = 0


def dali_index_text(tar_path: Path) -> str:
    """The DALI index (v1.2) of a tar as `write_shard` writes it, rebuilt from the tar's own headers."""
    lines: list[list[str]] = []
    last_key = None
    with tarfile.open(tar_path, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key != last_key:
                lines.append([])
                last_key = key
            lines[-1].append(f"{ext} {m.offset_data} {m.size} {m.name}")
    return f"v1.2 {len(lines)}\n" + "\n".join(" ".join(parts) for parts in lines) + "\n"


def verify_shards(root: str | Path, quick: bool = False) -> list[ShardCheck]:
    """One check per shard of the manifest: present, the recorded size, the recorded sha256 (skipped with
    ``quick``), and an index that matches the tar's contents."""
    root = Path(root)
    m = read_manifest(root)
    shards = m["shards"]
    checks = []
    with progress_bar("verify", total=sum(s["bytes"] for s in shards), unit="B") as bar:
        for s in shards:
            STOP.check()
            checks.append(_check_one(root, s, quick))
            bar.advance(s["bytes"])
    return checks


def _check_one(root: Path, s: dict, quick: bool) -> ShardCheck:
    tar, idx = root / s["name"], root / s["index"]
    if not tar.exists():
        return ShardCheck(s["name"], False, "missing")
    size = tar.stat().st_size
    if size != s["bytes"]:
        return ShardCheck(s["name"], False, f"{'truncated' if size < s['bytes'] else 'grown'}: {size} bytes, "
                                            f"the manifest says {s['bytes']}")
    if not quick and sha256_file(tar) != s["sha256"]:
        return ShardCheck(s["name"], False, "contents changed since it was written (sha256 differs from the manifest)")
    if not idx.exists():
        return ShardCheck(s["name"], False, f"its index {idx.name} is missing")
    try:
        expected = dali_index_text(tar)
    except (tarfile.TarError, OSError, EOFError) as e:
        return ShardCheck(s["name"], False, f"not a readable tar ({e})")
    if idx.read_text(errors="replace") != expected:
        return ShardCheck(s["name"], False, f"its index {idx.name} does not match the tar")
    return ShardCheck(s["name"], True, samples=s["samples"])


def rebuild_command(root: str | Path) -> str:
    """The `gzpipe shard` command that wrote ``root`` (from the manifest's config): re-running it rewrites only
    the shards that are missing or damaged and reuses the rest."""
    m = read_manifest(Path(root))
    c, rec = m["config"], m.get("sources") or {}
    # absolute paths (recorded since manifests carry `sources`), so the command works from any folder
    if rec.get("catalogs"):  # several: each with its image folder, in their order
        args = ["gzpipe", "shard"]
        for k in rec["catalogs"]:
            args += ["--catalog", k["path"], *(["--images", k["images"]] if k.get("images") else [])]
        args += ["--out", str(Path(root).resolve())]
    else:
        catalog = rec.get("catalog", {}).get("path", c["catalog"])
        images = rec.get("images", {}).get("path", m.get("images_dir", c["images"]))
        args = ["gzpipe", "shard", "--catalog", catalog, *(["--images", images] if images else []), "--out",
                str(Path(root).resolve())]
    if c.get("mapping"):
        args += ["--mapping", rec.get("mapping", {}).get("path", c["mapping"])]
    for flag, key in (("--format", "format"), ("--target", "target"), ("--fraction", "fraction"),
                      ("--train-fraction", "train_fraction"), ("--val", "val"),
                      ("--test", "test"), ("--seed", "seed"), ("--resize", "resize"), ("--quality", "quality"),
                      ("--shard-size", "shard_size"), ("--workers", "workers"), ("--verify", "verify")):
        if c.get(key) is not None:
            args += [flag, str(c[key])]
    if c.get("all_questions"):
        args.append("--all-questions")
    return shlex.join(args)
