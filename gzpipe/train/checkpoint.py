"""Checkpoints: written atomically, loaded with ``weights_only=True``, with one previous copy kept so that a
corrupt latest checkpoint falls back to the one before it (with a warning) instead of losing the run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open

LATEST = "latest_checkpoint.pth"
PREVIOUS = "previous_checkpoint.pth"
NEXT = "next_checkpoint.pth"  # a complete checkpoint between its write and its rename to LATEST
BEST = "best_model.pth"


def save(path: Path, state: dict) -> None:
    with atomic_open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer hides a failed write (a full disk) behind its own error
            if isinstance(e.__context__, OSError):
                raise e.__context__ from None
            raise


def save_latest(folder: Path, state: dict) -> None:
    """Write the new checkpoint completely (as ``next``) first, then keep the last good one as ``previous`` and
    rename the new one to ``latest``. A full disk or a kill at any point leaves at least one whole checkpoint:
    ``next`` exists only complete, and ``load_latest`` looks at it first."""
    folder.mkdir(parents=True, exist_ok=True)
    latest, pending = folder / LATEST, folder / NEXT
    save(pending, state)
    if latest.exists():
        os.replace(latest, folder / PREVIOUS)
    os.replace(pending, latest)


def load(path: Path, map_location="cpu") -> dict:
    """A checkpoint, loaded with ``weights_only=True``: a file holding code (a pickle that is not tensors and plain
    data) is refused, never run. Unreadable files are a one-line error naming them."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - pickle's UnpicklingError (gzpipe imports no pickle module), or damage
        if type(e).__name__ != "UnpicklingError" and not isinstance(e, (RuntimeError, EOFError, OSError,
                                                                           ValueError)):
            raise
        if type(e).__name__ == "UnpicklingError":
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise GzpipeError(f"checkpoint {path} cannot be loaded safely: it holds more than tensors and plain "
                              f"data ({first[:120]}); it was not written by gzpipe, or was tampered with") from None
        raise GzpipeError(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e).strip()[:120]}); "
                          "re-run training (--restart) to rewrite it") from None


def load_latest(folder: Path, map_location="cpu") -> dict | None:
    """The newest readable checkpoint, or None when there is none. Warns when falling back."""
    errors = []
    for name in (NEXT, LATEST, PREVIOUS):
        p = folder / name
        if not p.exists():
            continue
        try:
            state = load(p, map_location)
            if errors:
                warnings.warn(f"{errors[0]}; resumed from {p} instead", stacklevel=2)
            return state
        except Exception as e:  # noqa: BLE001 - a damaged file can fail in many ways
            errors.append(f"checkpoint {p} is unreadable ({type(e).__name__})")
    if errors:
        warnings.warn("; ".join(errors) + "; starting from scratch", stacklevel=2)
    return None
