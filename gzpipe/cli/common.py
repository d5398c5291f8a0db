"""What every command module shares: the Typer apps, the console, the option checks and the option types.

Names of backbones, loader backends, engines and ensemble methods come from their registries (plug-ins included, see
``gzpipe.plugins``), which import nothing heavy, so `--help` is quick.
"""

from __future__ import annotations

from typing import Literal

import typer
from rich.console import Console

from gzpipe.boost.registry import ENGINES
from gzpipe.ensemble.methods import METHODS
from gzpipe.errors import GzpipeError
from gzpipe.loaders.registry import BACKENDS
from gzpipe.models.registry import BACKBONES
from gzpipe.plugins import load_plugins


try:
    load_plugins()  # before the options are built: plug-ins' names are valid choices too
except GzpipeError as _plugin_error:  # reported when a command runs (below), as a one-line error
    PLUGIN_ERROR: GzpipeError | None = _plugin_error
else:
    PLUGIN_ERROR = None

app = typer.Typer(
    help="gzpipe: Galaxy Zoo 2 catalogue and images -> WebDataset shards -> fast loaders -> trained morphology "
         "models. Every command has --help; `gzpipe study` runs them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, choices listed in full
)
bench_app = typer.Typer(help="Benchmarks that print JSON rows (one object per line).", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(bench_app, name="bench")
out = Console(soft_wrap=True)  # one summary line stays one line in logs and pipes


def _version(value: bool) -> None:
    if value:
        from gzpipe import __version__

        print(f"gzpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print gzpipe's version and exit.")) -> None:
    if PLUGIN_ERROR is not None:
        raise PLUGIN_ERROR


def _device_option(value):
    """Checked where it is parsed, so the error names the flag (the stages' own check names the setting)."""
    from gzpipe.device import check_device_name

    if value is not None:
        try:
            check_device_name(value, "")
        except GzpipeError as e:
            raise typer.BadParameter(str(e).strip()) from None
    return value


def _positive(value):
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be positive, got {value}")
    return value


def _share(low_open: bool, high_open: bool):
    """A callback for a share between 0 and 1 whose ends may be excluded (typer's min/max include both ends, and its
    help would show the wrong range: the help text says the range instead)."""
    def check(value):
        if value is None:
            return value
        if value < 0 or value > 1 or (low_open and value == 0) or (high_open and value == 1):
            lo, hi = ("0 <" if low_open else "0 <="), ("< 1" if high_open else "<= 1")
            raise typer.BadParameter(f"must be {lo} F {hi}, got {value:g}")
        return value

    return check


def _choices(*names: str):
    return Literal.__getitem__(tuple(names))


Backend = _choices("auto", *BACKENDS)
Engine = _choices(*ENGINES)
Method = _choices(*METHODS)
Device = str  # auto, cpu, cuda or cuda:N - checked by gzpipe.device
Format = Literal["auto", "hart16", "kaggle", "zoobot"]
Target = Literal["debiased", "weighted_fraction", "fraction"]
Verify = Literal["decode", "header"]
Stretch = Literal["auto", "linear", "percentile", "asinh"]  # gzpipe.pixels.stretch.STRETCHES
Amp = Literal["bf16", "fp16", "off"]
TtaKind = Literal["dihedral", "angles", "rotate"]
BACKBONE_NAMES = ", ".join(BACKBONES) + ", or timm:NAME (any timm architecture, e.g. timm:convnext_nano)"
DEVICE_HELP = "auto (the GPU when there is one), cpu, cuda or cuda:N."

