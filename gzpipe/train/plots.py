"""training_curves.png: losses, validation MAE and learning rate per epoch, best epoch marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gzpipe.fileio import atomic_open  # noqa: E402


def training_curves(history: list[dict], best_epoch: int | None, title: str, path: Path) -> None:
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    axes[0].set(title="loss (masked)", xlabel="epoch")
    axes[1].plot(ep, [h["val_mae"] for h in history], "o-", color="C2")
    axes[1].set(title="validation MAE", xlabel="epoch")
    axes[2].plot(ep, [h["lr"] for h in history], "o-", color="C3")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
    axes[0].legend()
    fig.suptitle(title + (f"  (best epoch {best_epoch}, dashed)" if best_epoch else ""))
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
