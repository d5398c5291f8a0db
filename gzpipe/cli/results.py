"""Commands that use finished models: report, predict, study, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from gzpipe.cli.common import DEVICE_HELP, Backend, Device, TtaKind, _device_option, app, out

@app.command()
def report(out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder.")) -> None:
    """Comparison tables, figures and a self-contained report.html in <out>/model_comparison/."""
    from gzpipe.report import run_report

    run_report(out_dir)


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., metavar="INPUTS...", help="Image files, folders, tar files, shard "
                                        "folders, or catalogues (.csv / .parquet with an id and an image path "
                                        "column, e.g. galaxy-datasets' id_str and file_loc)."),
    model: Path = typer.Option(..., metavar="DIR", help="A finished model: artifacts/<backbone>, "
                               "artifacts/<engine>_<backbone> or artifacts/ensemble_<method>."),
    out_file: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Output .parquet or .csv "
                                            "[predictions.csv; predictions.parquet beyond 5,000 rows]."),
    tta: int = typer.Option(1, min=1, metavar="N", help="Test-time augmentation: average N views."),
    tta_kind: TtaKind = typer.Option("dihedral", help="dihedral: exact rotations by 90 degrees and mirrors (up to "
                                                      "8); angles: those 8 at N / 8 angles each warped from the "
                                                      "image (N = 16, 32 ...); rotate: N evenly spaced angles "
                                                      "of the plain view."),
    cumulative: bool = typer.Option(False, "--cumulative", help="Also write Kaggle's 37 cumulative columns "
                                    "(Class1.1 ... Class11.6, in its layout); the 7 Class8.x columns (the odd "
                                    "feature's type) stay empty: GZ2's 30 targets leave task 8 out."),
    batch_size: int = typer.Option(32, min=1, metavar="N", help="Images per batch."),
    workers: int = typer.Option(2, min=0, metavar="N", help="Decoding worker processes."),
    device: Device = typer.Option("auto", metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    backend: Backend = typer.Option("auto", help="Loader backend (dali reads shard folders only)."),
    part_size: int = typer.Option(10_000, min=1, metavar="N", help="Images per part: each part is saved when done, "
                                                                   "so a killed run resumes."),
    images: Optional[Path] = typer.Option(None, metavar="DIR", help="Folder that a catalogue's relative image paths "
                                                                    "start from [the catalogue's folder]."),
    id_column: Optional[str] = typer.Option(None, metavar="NAME", help="A catalogue's id column [id_str, id, "
                                                                       "asset_id, ...]."),
    path_column: Optional[str] = typer.Option(None, metavar="NAME", help="A catalogue's image path column "
                                                                         "[file_loc, path, ...]."),
    catalogue: Optional[str] = typer.Option(None, metavar="FORMAT", help="Whose labels to predict, for a model "
                                            "whose boosters learnt several catalogues' (`gzpipe boost "
                                            "--by-catalogue`): kaggle, hart16, ..., or own: each galaxy's, by its "
                                            "id's prefix (kaggle:..., hart16:... in a union's shards; others get "
                                            "the default's) [the one with the most train galaxies]."),
    spread: bool = typer.Option(False, "--spread", help="For an ensemble: also each target's spread across its "
                                "members (their weighted standard deviation), as <target>_spread columns."),
) -> None:
    """Predict the 30 GZ2 vote fractions for new galaxy images with any finished model. Unreadable files get a row
    with the reason in the `error` column; the rest go on. Under `torchrun` the processes share the work."""
    from gzpipe.predict import PredictConfig, run_predict

    run_predict(PredictConfig(model=str(model), inputs=[str(p) for p in inputs],
                              out=str(out_file) if out_file else None, tta=tta, tta_kind=tta_kind,
                              cumulative=cumulative, batch_size=batch_size, workers=workers, device=device,
                              backend=backend, part_size=part_size, images=str(images) if images else None,
                              id_column=id_column, path_column=path_column, catalogue=catalogue, spread=spread))


@app.command()
def export(
    model: Path = typer.Option(..., metavar="DIR", help="A finished backbone run, e.g. artifacts/resnet50."),
    out_dir: Path = typer.Option(..., "--out", metavar="DIR", help="The folder to write (new, or an earlier "
                                                                   "export)."),
    force: bool = typer.Option(False, help="Replace an export of another checkpoint (written beside it, swapped in "
                                           "when complete)."),
) -> None:
    """Write a finished backbone as model.safetensors + config.json (architecture, head, targets in order, image
    size, normalisation, gzpipe version, metrics) + a README.md model card. `gzpipe predict --model DIR` and
    `gzpipe train --weights DIR` read it back."""
    from gzpipe.export import run_export

    run_export(model, out_dir, force)


@app.command()
def study(
    preset: Optional[Literal["demo", "real", "sample", "full"]] = typer.Option(
        None, help="demo: synthetic, CPU, ~10 min; real: all the real labelled data in $GZPIPE_SHARED (the GZ2 "
                   "sample + 7,336 Kaggle galaxies in three catalogues, 8,097 after de-duplication), CPU, ~40 min; "
                   "sample: the 800 hand-picked GZ2 galaxies alone, < 30 min; full: the whole GZ2 release with the "
                   "original hyperparameters, for a GPU."),
    config: Optional[Path] = typer.Option(None, metavar="FILE", help="YAML: a preset and overrides of data, shard, "
                                          "train, boost, backbones, engines, methods, out."),
    out_dir: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder [the preset's]."),
    force: Optional[str] = typer.Option(None, metavar="STAGES", help="Re-do these stages even where finished: a "
                                        "comma list of synth, shard, train, features, boost, ensemble, report, or "
                                        "all. Each new run is built beside the finished one, which stays until the "
                                        "new one is complete."),
    restart: bool = typer.Option(False, "--restart", help="Same as --force all: everything from scratch."),
) -> None:
    """Run the whole model comparison, skipping what is finished and current, re-doing what is out of date and
    resuming what was interrupted. The resolved configuration is saved as <out>/study_config.yaml."""
    from gzpipe.report.collect import collect
    from gzpipe.study import STAGES, parse_stages, resolve_study, run_study

    stages = set(STAGES) if restart else parse_stages(force)
    cfg = resolve_study(preset, config, out_dir)
    run_study(cfg, stages)
    table, _, _ = collect(Path(cfg.out))
    _print_summary(table)


def _print_summary(table) -> None:
    from rich.table import Table

    t = Table(title="gzpipe study: test split")
    for col in ("model", "kind", "accuracy", "MAE", "RMSE"):
        t.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for _, r in table.sort_values("mae").iterrows():
        t.add_row(r["name"], r["kind"], f"{r['accuracy']:.4f}", f"{r['mae']:.4f}", f"{r['rmse']:.4f}")
    out.print(t)


@app.command()
def demo(out_dir: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder "
                                                                                  "[artifacts].")) -> None:
    """Same as `gzpipe study --preset demo`."""
    study(preset="demo", config=None, out_dir=out_dir, force=None, restart=False)

