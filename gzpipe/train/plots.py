"""training_curves.png: losses, validation MAE and learning rate per epoch, best epoch marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gzpipe.fileio import atomic_open  # noqa: E402


def epoch_axis(ax, last_epoch: int) -> None:
    """Whole epochs from 1, with half an epoch of margin: a one-epoch run gets a readable axis, not 0.96-1.04."""
    ax.set_xlim(0.5, max(1, last_epoch) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(history: list[dict], best_epoch: int | None, title: str):
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ep, [h["train_loss"] for h in history], "s--", label="train")
    axes[0].plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    axes[0].set(title="loss (masked)", xlabel="epoch")
    axes[1].plot(ep, [h["val_mae"] for h in history], "o-", color="C2")
    axes[1].set(title="validation MAE", xlabel="epoch")
    axes[2].plot(ep, [h["lr"] for h in history], "o-", color="C3")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        epoch_axis(ax, max(ep, default=1))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1)
    axes[0].legend()
    fig.suptitle(title + (f"  (best epoch {best_epoch}, dotted line)" if best_epoch else ""))
    fig.tight_layout()
    return fig


def training_curves(history: list[dict], best_epoch: int | None, title: str, path: Path) -> None:
    fig = curves_figure(history, best_epoch, title)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
