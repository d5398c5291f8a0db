"""Commands that make and check the inputs: info, synth, download, shard, verify."""

from __future__ import annotations

from collections import Counter

from pathlib import Path
from typing import Optional

import typer

from gzpipe.cli.common import Format, Stretch, Target, Verify, _share, app, out

@app.command()
def info() -> None:
    """Print library versions, whether CUDA and DALI are usable, and the CPU count."""
    from gzpipe.info import collect

    for k, v in collect().items():
        out.print(f"[bold]{k:>14}[/bold]  {v}")


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write images/, gz2_hart16.csv and "
                                                             "gz2_filename_mapping.csv into."),
    n: int = typer.Option(1000, "--n", min=1, metavar="N", help="Number of galaxies."),
    seed: int = typer.Option(0, metavar="N", help="Random seed: the same seed gives the same bytes."),
    quality: int = typer.Option(90, min=1, max=100, metavar="Q", help="JPEG quality of the 424 x 424 images."),
    workers: int = typer.Option(1, min=1, metavar="N", help="Processes rendering in parallel (the output does not "
                                                            "depend on it)."),
) -> None:
    """Render a synthetic GZ2 release (images, Hart16 table, filename mapping) from physical galaxy models."""
    from gzpipe.synth import SynthConfig, synth as run

    summary = run(SynthConfig(out=out_dir, n=n, seed=seed, quality=quality, workers=workers))
    out.print(f"wrote {summary['galaxies']} galaxies to {summary['out']}")
    out.print(f"next: gzpipe shard --catalog {summary['catalog']} --mapping {summary['mapping']} "
              f"--images {summary['images']} --out SHARDS")


@app.command()
def download(
    dest: Path = typer.Option(Path("data/gz2"), metavar="DIR", help="Folder for the release files (and images/ "
                                                                    "unpacked)."),
    what: str = typer.Option("labels,mapping,images", metavar="LIST", help="Comma list of: labels "
                             "(gz2_hart16.csv.gz), mapping, images (the 3.4 GB zip)."),
    base_url: Optional[str] = typer.Option(None, metavar="URL", help="A mirror serving the files under their "
                                                                     "release names."),
    checksums: Optional[Path] = typer.Option(None, metavar="FILE", help="File of '<md5>  <file name>' lines (for a "
                                                                        "mirror's files)."),
    timeout: float = typer.Option(60.0, min=0.1, metavar="SECONDS", help="Network timeout."),
) -> None:
    """Fetch the GZ2 release (Hart16 table, filename mapping, image zip), resumable, with checksum checks and a
    safe unzip."""
    from gzpipe.download import DownloadConfig, run_download

    run_download(DownloadConfig(str(dest), tuple(w.strip() for w in what.split(",") if w.strip()), base_url,
                                str(checksums) if checksums else None, timeout))
    out.print(f"next: gzpipe shard --catalog {dest}/gz2_hart16.csv.gz --mapping {dest}/gz2_filename_mapping.csv "
              f"--images {dest}/images --out SHARDS")


@app.command()
def shard(
    catalog: list[Path] = typer.Option(..., metavar="FILE", help="Labels: gz2_hart16.csv[.gz], a CSV with asset_id "
                                       "and Hart16 columns, Kaggle's training_solutions (all 37 columns or some of "
                                       "its questions), or a galaxy-datasets (Zoobot) catalogue (CSV or Parquet). "
                                       "Repeat it to shard the union of several catalogues: split once by id hash, "
                                       "a galaxy in two catalogues used once (from the first)."),
    images: Optional[list[Path]] = typer.Option(None, metavar="DIR", help="Folder of the images (<asset_id>.jpg "
                                                "for Hart16, <GalaxyID>.jpg for Kaggle, or .png, .tif, .fits and the "
                                                "other formats read, re-encoded as JPEG at --quality; a galaxy's "
                                                "three band files <id>_g/_r/_z.fits are one colour image); a Zoobot "
                                                "catalogue's relative file_loc paths start from it [the catalogue's "
                                                "folder; not needed for absolute file_loc paths or a parquet that "
                                                "carries its images]. With several --catalog: once for all, or once "
                                                "per --catalog in the same order."),
    out_dir: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder for the tars, their .idx files and "
                                                                   "manifest.json."),
    mapping: Optional[Path] = typer.Option(None, metavar="FILE", help="gz2_filename_mapping.csv (needed when the "
                                           "catalogue has dr7objid but no asset_id)."),
    format: Format = typer.Option("auto", "--format", help="Catalogue format; auto tells them apart by their "
                                                          "columns."),
    target: Optional[Target] = typer.Option(None, help="Hart16 column family to train on [debiased]. Kaggle's "
                                            "columns are weighted_fraction and galaxy-datasets' fraction: they take "
                                            "no other."),
    fraction: float = typer.Option(1.0, metavar="F", callback=_share(True, False), help="Keep this share of "
                                   "galaxies, 0 < F <= 1 (by id hash: a larger fraction keeps a superset)."),
    train_fraction: float = typer.Option(1.0, metavar="F", callback=_share(True, False), help="Keep this share "
                                         "of the train split only, 0 < F <= 1, val and test whole (by id hash: a "
                                         "larger share keeps a superset): a learning curve on one test split."),
    val: float = typer.Option(0.1, metavar="F", callback=_share(True, True),
                              help="Share of galaxies in the validation split, 0 < F < 1 (val + test below 1)."),
    test: float = typer.Option(0.1, metavar="F", callback=_share(True, True),
                               help="Share of galaxies in the test split, 0 < F < 1 (val + test below 1)."),
    seed: int = typer.Option(42, metavar="N", help="Seed of the split, subsample and write-order hashes."),
    resize: Optional[int] = typer.Option(None, min=8, max=4096, metavar="PX", help="Re-encode images at this size "
                                         "(square) instead of storing the originals; at least 1.25x the training "
                                         "--image-size, or the 0.8 centre crop is enlarged and blurred. A "
                                         "non-square image is always cut to its centred square (the largest that "
                                         "fits) first, never stretched; every loader and predict do the same."),
    quality: int = typer.Option(90, min=1, max=100, metavar="Q", help="JPEG quality when an image is re-encoded."),
    stretch: Stretch = typer.Option("auto", help="How images deeper than 8 bits (16-bit, float) and FITS become 8 "
                                    "bits: linear (from the image's own range), percentile (each band between its "
                                    "0.5 and 99.9 percentiles), asinh (those percentiles, then an asinh stretch, "
                                    "as survey colour images); auto: asinh for FITS, linear for the others. "
                                    "Recorded in the manifest; models and predict apply the same."),
    shard_size: int = typer.Option(1000, min=1, metavar="N", help="Samples per tar shard."),
    workers: int = typer.Option(1, min=1, metavar="N", help="Processes packing shards in parallel."),
    verify: Verify = typer.Option("decode", help="decode: decode each JPEG (catches corrupt data); header: check "
                                                 "markers only (faster)."),
    max_rejected: float = typer.Option(0.1, min=0.0, max=1.0, metavar="F", help="Fail (exit 2, the manifest still "
                                       "written) when more than this share of the rows is rejected."),
    all_questions: bool = typer.Option(False, "--all-questions", help="Refuse a catalogue that lacks some of the "
                                       "10 questions (by default they are masked for its galaxies, with a note)."),
    sum_tolerance: float = typer.Option(0.02, metavar="T", callback=_share(True, False), help="Weighted and raw "
                                        "fractions (and Kaggle's, made conditional) of a question a galaxy's "
                                        "volunteers reached must sum to 1 within T, or the row is rejected with the "
                                        "sums (the real files are within 0.002; debiased fractions are not checked: "
                                        "they need not sum to 1). An answer left empty masks its question for that "
                                        "galaxy, counted in a note."),
    random_draw: Optional[list[Path]] = typer.Option(None, metavar="FILE", help="One of the --catalog files whose "
                                                     "galaxies are a random draw of the galaxies the models are "
                                                     "for (repeatable): the report leads with the Kaggle metric on "
                                                     "them, and `train --select kaggle` early-stops on their val "
                                                     "galaxies."),
    force: bool = typer.Option(False, help="Rebuild a finished shard folder with other settings: the new shards are "
                                           "written beside it (room for both is needed) and replace it only when "
                                           "complete."),
) -> None:
    """Pack a catalogue and its images into WebDataset tar shards with DALI indexes and a manifest. Re-run with
    the same settings, it reuses every intact shard and rewrites missing or damaged ones; a finished folder with
    other settings is kept unless --force."""
    from gzpipe.shard import ShardConfig, run_shard

    many = len(catalog) > 1
    images = images[-1:] if images and not many else images  # one catalogue: a repeated --images, the last wins
    cfg = ShardConfig(catalog=catalog if many else catalog[0], images=(images or None) if many else
                      (images[0] if images else None), out=out_dir, mapping=mapping, format=format, target=target,
                      fraction=fraction, train_fraction=train_fraction, val=val, test=test, seed=seed, resize=resize,
                      quality=quality,
                      shard_size=shard_size, workers=workers, verify=verify, stretch=stretch, max_rejected=max_rejected,
                      all_questions=all_questions, sum_tolerance=sum_tolerance,
                      random_draw=[str(r) for r in random_draw] if random_draw else None, force=force)
    m = run_shard(cfg)
    if not m["run"]["skipped"]:
        _print_shard_summary(m, out_dir)


def _print_shard_summary(m: dict, out_dir: Path) -> None:
    c = m["counts"]
    verb = "stored" if m["run"]["shards_reused"] else "written"  # a resume reuses shards (its own line says so)
    dups = f", {c['duplicates']} already in an earlier catalogue" if c.get("duplicates") else ""
    out.print(f"[bold]{c['written']}[/bold] {verb}, [bold]{c['rejected']}[/bold] rejected of {c['inputs']} inputs "
              f"({c['catalog_rows']} catalogue rows, {c['excluded_by_fraction']} left out by --fraction / --train-fraction{dups})")
    if len(m.get("catalogs") or []) > 1:
        for k in m["catalogs"]:
            out.print(f"  {Path(k['path']).name} ({k['format']}): {k['rows']} rows, {k['written']} written, "
                      f"{k['rejected']} rejected, {k['duplicates']} duplicates", highlight=False)
    out.print("splits: " + ", ".join(f"{k} {v}" for k, v in c["per_split"].items())
              + f"; {len(m['shards'])} shards in {out_dir}")
    if m["rejected_by_reason"]:
        out.print("rejected: " + ", ".join(f"{k} {v}" for k, v in m["rejected_by_reason"].items())
                  + f" (each row with its reason in {out_dir / 'manifest.json'})")
    if c.get("converted"):
        from gzpipe.shard.store import CONVERSIONS, conversion_kinds

        kinds = Counter(k for r in m.get("converted", []) for k in conversion_kinds(r["reason"]))
        what = ", ".join(f"{n} {CONVERSIONS[k]}" for k, n in kinds.items()) or f"{c['converted']} images"
        out.print(f"converted: {what} (each with what was done under `converted` in the manifest)", highlight=False)


@app.command()
def verify(
    shards: Path = typer.Argument(..., metavar="SHARDS", help="Shard folder written by `gzpipe shard`."),
    quick: bool = typer.Option(False, "--quick", help="Check presence, sizes and indexes only (no sha256 of the "
                                                      "tars)."),
) -> None:
    """Check every shard against manifest.json (present, size, sha256, index, samples). Exits 1 and names each
    damaged file and the `gzpipe shard` command that rebuilds just those."""
    from gzpipe.shard.verify import rebuild_command, verify_shards

    checks = verify_shards(shards, quick)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        out.print(f"[bold red]damaged[/bold red] {shards / c.name}: {c.problem}", highlight=False)
    if not bad:
        empty = sum(1 for c in checks if c.samples == 0)
        out.print(f"{len(checks)} shards OK in {shards}" + (" (sizes and indexes; without --quick the sha256 too)"
                                                             if quick else "")
                  + (f"; {empty} of them hold no samples" if empty else ""))
        return
    out.print(f"{len(bad)} of {len(checks)} shards damaged. Rebuild just those (the rest are reused) with:\n"
              f"  {rebuild_command(shards)}", highlight=False, markup=False)
    raise typer.Exit(1)

